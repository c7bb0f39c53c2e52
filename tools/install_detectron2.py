#!/usr/bin/env python
"""Make ``import detectron2`` work on a machine that reaches only the package registries.

detectron2 is not published on PyPI. Its standard install is a build from its GitHub
source; users who can do that should, and this script then leaves their build alone.

Otherwise this script takes the registry copy ``pb1-detectron2==0.6`` (an sdist holding
upstream v0.6's Python files but not its C++/CUDA sources, so ``pip install`` of it
fails), repackages only its pure-Python ``detectron2`` package (model-zoo configs
included) as a normal distribution named ``detectron2`` and pip-installs that, so
``pip show detectron2`` and ``pip uninstall detectron2`` behave as usual. Nothing is
patched on disk: the few incompatibilities with current torch/numpy/Pillow/setuptools
are handled at import time by ``instancefcn_d2/compat.py``.

Idempotent: exits at once when detectron2 is already importable.
"""
import argparse
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
# sha256 of pb1-detectron2-0.6.tar.gz as listed by the registry's simple index.
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

# Upstream v0.6's pure-Python runtime requirements (setup.py), minus its code-style and
# caffe2-only entries (black, future, pydot) that nothing at run time imports.
REQUIREMENTS = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

SETUP_PY = '''
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="{version}",
    description="detectron2 {version}, pure-Python files of the registry copy {sdist} "
    "(no compiled ops), packaged by instancefcn_d2/tools/install_detectron2.py",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    python_requires=">=3.7",
    install_requires={requirements!r},
)
'''


def detectron2_importable() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def _pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist(dest: str) -> str:
    """Fetch the sdist without building it (its setup.py would try to compile)."""
    spec = f"{SDIST_NAME}=={SDIST_VERSION}"
    try:
        # pip honours the user's index configuration; its metadata step only needs torch.
        _pip("download", "--no-deps", "--no-build-isolation", "-d", dest, spec)
    except subprocess.CalledProcessError:
        # Fall back to the index page itself, which needs no metadata step at all.
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        page = urllib.request.urlopen(f"{index}/{SDIST_NAME}/").read().decode()
        m = re.search(r'href="([^"]*%s-%s\.tar\.gz[^"]*)"' % (SDIST_NAME, SDIST_VERSION), page)
        if not m:
            raise SystemExit(f"Could not find {spec} on {index}")
        url = urllib.request.urljoin(f"{index}/{SDIST_NAME}/", m.group(1).split("#")[0])
        urllib.request.urlretrieve(url, os.path.join(dest, f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"))
    path = os.path.join(dest, f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")
    digest = _sha256(path)
    if digest != SDIST_SHA256:
        raise SystemExit(f"{path}: sha256 {digest} does not match the expected {SDIST_SHA256}")
    return path


def build_and_install(sdist: str, workdir: str):
    stage = os.path.join(workdir, "stage")
    os.makedirs(stage)
    prefix = f"{SDIST_NAME}-{SDIST_VERSION}/detectron2/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        for m in members:
            m.name = m.name[len(f"{SDIST_NAME}-{SDIST_VERSION}/"):]
        tar.extractall(stage, members=members, filter="data")
    with open(os.path.join(stage, "setup.py"), "w") as f:
        f.write(SETUP_PY.format(version=SDIST_VERSION, sdist=SDIST_NAME, requirements=REQUIREMENTS))
    _pip("install", "--no-build-isolation", stage)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    args = ap.parse_args()
    if detectron2_importable() and not args.force:
        spec = importlib.util.find_spec("detectron2")
        print(f"detectron2 already importable from {os.path.dirname(spec.origin)}; leaving it alone.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist(tmp)
        build_and_install(sdist, tmp)
    print("detectron2 (pure-Python, registry copy) installed.")


if __name__ == "__main__":
    main()
