"""Where a figure was measured: CPU, threads, a torch.mm GEMM peak, the load average at start,
torch/detectron2 versions and the git commit. Shared by tools/quickstart.py and tools/benchmark/.

A run is called ``"idle": true`` only when the 1-minute and the 5-minute load averages at its
start, per logical core, are at most ``IDLE_LOAD_PER_CORE``; otherwise the description says ``false`` and a warning
is logged, because other work on the cores slows every stage and makes timings incomparable.
"""
import contextlib
import logging
import os
import platform
import statistics
import subprocess
import time

__all__ = ["IDLE_LOAD_PER_CORE", "cpu_model_name", "describe_machine", "gemm_peak", "git_commit",
           "load_state"]

IDLE_LOAD_PER_CORE = 0.25
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
logger = logging.getLogger("instancefcn_d2.machine")


def cpu_model_name():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit(repo=REPO):
    """The checkout's commit, with "-dirty" when tracked files differ; None outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def load_state(loadavg=None, cores=None):
    """``{"load_average_at_start": [1, 5, 15 min], "load_per_core": x, "idle": bool}``; logs a
    warning when the machine is not idle (1- or 5-minute load per core above IDLE_LOAD_PER_CORE)."""
    loadavg = list(os.getloadavg() if loadavg is None else loadavg)
    cores = cores or os.cpu_count() or 1
    per_core, per_core_5min = loadavg[0] / cores, loadavg[1] / cores
    # The 5-minute figure too: a job that ended a few seconds ago leaves the 1-minute load low
    # while the caches, clocks and memory it churned have not settled.
    idle = per_core <= IDLE_LOAD_PER_CORE and per_core_5min <= IDLE_LOAD_PER_CORE
    if not idle:
        logger.warning(
            f"load average {loadavg[0]:.2f} (1 min) / {loadavg[1]:.2f} (5 min) on {cores} cores at the start "
            f"({per_core:.2f} / {per_core_5min:.2f} per core, limit {IDLE_LOAD_PER_CORE}): other work shares "
            "the CPU, timings are not idle-machine figures (recorded as \"idle\": false)."
        )
    return {"load_average_at_start": [round(x, 2) for x in loadavg], "load_per_core": round(per_core, 3),
            "load_per_core_5min": round(per_core_5min, 3), "idle": idle}


def gemm_peak(device="cpu", amp=None, sizes=(1024, 2048, 4096), repeats=5, threads=None):
    """The machine's dense-compute limit: the best median throughput of square ``torch.mm`` over
    ``sizes``. One size is not enough: MKL's sgemm on an AMD CPU ran 2048x2048 ~25% slower than
    4096x4096, which made the convolutions look faster than the "peak"."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp or "none", torch.float32)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    inner = 10 if device == "cuda" else 1
    per_size = []
    for n in sizes:
        a = torch.randn(n, n, generator=g).to(device, dtype)
        b = torch.randn(n, n, generator=g).to(device, dtype)
        times = []
        for i in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b)
            sync()
            if i:  # the first call is the warm-up
                times.append((time.perf_counter() - t0) / inner)
        t = float(statistics.median(times))
        per_size.append({"n": n, "median_s": t, "flops_per_s": 2 * n ** 3 / t, "runs_s": times})
        del a, b
    best = max(per_size, key=lambda r: r["flops_per_s"])
    return {"n": best["n"], "dtype": str(dtype).replace("torch.", ""), "median_s": best["median_s"],
            "flops_per_s": best["flops_per_s"], "runs_s": best["runs_s"], "sizes": per_size}


def describe_machine(device="cpu", threads=None, gemm_sizes=None, loadavg=None):
    """The machine description recorded with every published figure. Read the load average
    first (before the GEMM probe loads the cores). ``gemm_sizes=()`` skips the probe."""
    import torch
    import detectron2

    load = load_state(loadavg)
    info = {
        "cpu_model": cpu_model_name(),
        "logical_cores": os.cpu_count(),
        "torch_num_threads": threads or torch.get_num_threads(),
        **load,
        "torch_version": torch.__version__,
        "detectron2_version": detectron2.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "device": device,
        "gpu_name": torch.cuda.get_device_name(0) if device == "cuda" else None,
    }
    if device == "cuda":
        info["cuda_matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    if gemm_sizes is None:
        gemm_sizes = (1024, 2048, 4096) if device == "cpu" else (4096, 8192)
    if gemm_sizes:
        gemm = gemm_peak(device, sizes=gemm_sizes, threads=threads)
        info["gemm_peak_gflops_per_s"] = round(gemm["flops_per_s"] / 1e9, 2)
        info["gemm_peak_n"] = gemm["n"]
    return info
