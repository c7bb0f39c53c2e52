"""What the figures are measured against: the machine (tools/machine.py: CPU, threads, load
average at start and whether that is "idle", versions, commit), its dense-compute peak
(``torch.mm``) and the memory it has free for the rows that may not fit."""
import contextlib

from tools.machine import describe_machine, gemm_peak

__all__ = ["describe", "gemm_sizes", "mem_available_bytes", "fits_in_memory", "peak_gemm"]

# Margin on top of a projected peak before a row is run for real: the page cache and the
# other processes on the machine must not be pushed into swap by a benchmark row.
MEMORY_MARGIN = 1.25
MEMORY_RESERVE_BYTES = 1024 ** 3


def describe(device, threads=None):
    """The machine description carried by every JSON; read first, before any work loads the cores."""
    return describe_machine(device, threads, gemm_sizes=())


def gemm_sizes(device, quick):
    if device == "cpu":
        return (512, 1024) if quick else (1024, 2048, 4096)
    return (2048, 4096) if quick else (4096, 8192)


def peak_gemm(device, amp, quick, threads=None):
    """Best median ``torch.mm`` throughput over :func:`gemm_sizes` (tools.machine.gemm_peak)."""
    return gemm_peak(device, None if amp in (None, "none") else amp, gemm_sizes(device, quick), 5, threads)


def mem_available_bytes():
    """``MemAvailable`` from /proc/meminfo (None where there is no such file)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def fits_in_memory(projected_bytes, available_bytes):
    """Whether a process projected to peak at ``projected_bytes`` may run with
    ``available_bytes`` free (unknown availability: it does not)."""
    if available_bytes is None:
        return False
    return projected_bytes * MEMORY_MARGIN + MEMORY_RESERVE_BYTES <= available_bytes
