"""VGG-16 + detectron2's FPN: a U-shaped VGG-16 that the offline ImageNet weights initialise.

The bottom-up path is the plain VGG-16 (``conv5_dilation=1``): ``conv3``, ``conv4``, ``conv5``
at strides 4, 8, 16; detectron2's ``FPN`` adds the top-down path and lateral connections and
outputs ``p2``, ``p3``, ``p4`` (and ``p5``, stride 32, from ``LastLevelMaxPool``), each with
``MODEL.FPN.OUT_CHANNELS`` channels.

ImageNet VGG-16 checkpoints name the layers ``backbone.conv1_1.*`` (the single-level model's
names); here they live under ``backbone.bottom_up.``. A load-state-dict pre-hook maps the former
to the latter, so the same file (``weights/vgg16_caffe_imagenet.pth``, written by set-up)
initialises both models, and checkpoints of this model load as usual.
"""
import math

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .vgg import VGG16, VGG16_BLOCKS

__all__ = ["VGG16FPN", "build_vgg16_fpn_backbone"]

_VGG_LAYERS = tuple(f"conv{b}_{i}" for b, (n, _) in enumerate(VGG16_BLOCKS, start=1) for i in range(1, n + 1))


class VGG16FPN(FPN):
    """``FPN`` over a stride-16 ``VGG16`` that also loads plain VGG-16 checkpoints."""

    def __init__(self, bottom_up: VGG16, **fpn_kwargs):
        super().__init__(bottom_up=bottom_up, **fpn_kwargs)
        self._register_load_state_dict_pre_hook(_vgg16_keys_to_bottom_up)


def _vgg16_keys_to_bottom_up(state_dict, prefix, *args):
    """``{prefix}conv4_2.weight`` -> ``{prefix}bottom_up.conv4_2.weight`` (in place)."""
    for key in list(state_dict):
        rest = key[len(prefix):]
        if key.startswith(prefix) and rest.split(".")[0] in _VGG_LAYERS:
            state_dict.setdefault(prefix + "bottom_up." + rest, state_dict.pop(key))


def coarsest_fpn_output(bottom_up, in_features) -> str:
    """Name of the coarsest output of an ``FPN`` over ``in_features`` of ``bottom_up``:
    ``p{log2(stride)}`` of the coarsest input, as detectron2's FPN names its outputs (its
    ``LastLevelMaxPool`` reads ``"p5"``, the coarsest output over res2..res5)."""
    return f"p{int(math.log2(max(bottom_up.output_shape()[f].stride for f in in_features)))}"


@BACKBONE_REGISTRY.register()
def build_vgg16_fpn_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.BACKBONE.NAME: "build_vgg16_fpn_backbone"``; reads ``MODEL.VGG.*`` (bottom-up,
    whose ``OUT_FEATURES`` must include ``MODEL.FPN.IN_FEATURES``) and ``MODEL.FPN.*``."""
    if cfg.MODEL.VGG.CONV5_DILATION != 1:
        raise ValueError("build_vgg16_fpn_backbone needs MODEL.VGG.CONV5_DILATION 1 (FPN wants strides 4, 8, 16)")
    missing = [f for f in cfg.MODEL.FPN.IN_FEATURES if f not in cfg.MODEL.VGG.OUT_FEATURES]
    if missing:
        raise ValueError(f"MODEL.FPN.IN_FEATURES {missing} are not in MODEL.VGG.OUT_FEATURES {cfg.MODEL.VGG.OUT_FEATURES}")
    bottom_up = VGG16(
        out_features=cfg.MODEL.VGG.OUT_FEATURES,
        conv5_dilation=1,
        norm=cfg.MODEL.VGG.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )
    top_block = LastLevelMaxPool()
    # The top block pools the coarsest FPN output whatever the first input is (p4 for
    # conv3..conv5, p4 too for conv4..conv5: strides 8, 16).
    top_block.in_feature = coarsest_fpn_output(bottom_up, cfg.MODEL.FPN.IN_FEATURES)
    return VGG16FPN(
        bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
