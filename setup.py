"""instancefcn_d2: InstanceFCN as a Detectron2 plugin.

detectron2 and torch are not listed in install_requires: torch has many builds, and
detectron2 is not on PyPI. `bash tools/setup.sh` installs both (see README).
"""
from setuptools import find_packages, setup

setup(
    name="instancefcn_d2",
    version="0.1.0",
    description="InstanceFCN (instance-sensitive FCN segment proposals) for Detectron2",
    packages=find_packages(include=["instancefcn_d2", "instancefcn_d2.*"]),
    python_requires=">=3.8",
    install_requires=[
        "fvcore",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "onnx",  # reads the offline ImageNet VGG-16 (tools/convert_vgg16_weights.py)
        "numpy",
        "Pillow",
        "tensorboard",
        "psutil",
        "shapely",  # detectron2 crops polygon masks with it (INPUT.CROP, e.g. planned by tools/plan_scales.py)
    ],
    extras_require={
        "data": ["tifffile"],  # reads the real microscopy sets (tools/prepare_real_data.py)
        "test": ["pytest", "tifffile"],
    },
)
