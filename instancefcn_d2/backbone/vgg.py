"""VGG-16 (the 13 conv layers) as a Detectron2 backbone, optionally at output stride 8.

With ``conv5_dilation=2`` pool4 keeps the resolution (3x3, stride 1, pad 1 as in
DeepLab) and conv5_1..conv5_3 are dilated by 2 ("hole algorithm"), so conv5 is at stride 8
with the receptive field of the original network. With ``conv5_dilation=1`` it is the plain
VGG-16 feature extractor (conv5_3 at stride 16), identical to torchvision's ``vgg16().features``
up to (not including) pool5.

Parameter names are ``conv{block}_{layer}`` (``conv4_2.weight``), the names of the original
Caffe model, so converted checkpoints read naturally.
"""
from typing import Dict, List

import torch.nn.functional as F

from detectron2.layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["VGG16", "build_vgg16_backbone", "VGG16_BLOCKS"]

# (number of conv layers, output channels) for each of the five blocks.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


class VGG16(Backbone):
    """VGG-16 conv layers; outputs ``conv1``..``conv5`` (each block's last ReLU).

    Input ``(N, 3, H, W)``; ``conv{b}`` is ``(N, C_b, ceil-free H / s_b, W / s_b)`` with
    strides 1, 2, 4, 8 and 8 (dilated) or 16.
    """

    def __init__(self, out_features=("conv5",), conv5_dilation: int = 2, norm: str = "",
                 freeze_at: int = 0, in_channels: int = 3):
        """
        Args:
            out_features: names of the blocks to return, among conv1..conv5.
            conv5_dilation: 2 for stride 8 (pool4 stride 1, dilated conv5), 1 for stride 16.
            norm: detectron2 norm name applied after every conv ("" for none).
            freeze_at: freeze blocks conv1..conv{freeze_at} (0: train everything), like
                detectron2's ResNet ``FREEZE_AT``.
            in_channels: input channels.
        """
        super().__init__()
        if conv5_dilation not in (1, 2):
            raise ValueError(f"conv5_dilation must be 1 or 2, got {conv5_dilation}")
        names = [f"conv{b + 1}" for b in range(len(VGG16_BLOCKS))]
        for f in out_features:
            if f not in names:
                raise ValueError(f"Unknown VGG out_feature {f!r}; choose from {names}")
        if not 0 <= freeze_at <= len(names):
            raise ValueError(f"freeze_at must be in [0, {len(names)}], got {freeze_at}")
        self._out_features = list(out_features)
        self._conv5_dilation = conv5_dilation
        self.stage_names: List[str] = names
        self.stage_layers: Dict[str, List[str]] = {}

        stride, prev = 1, in_channels
        self._out_feature_strides, self._out_feature_channels = {}, {}
        for b, (n_layers, ch) in enumerate(VGG16_BLOCKS, start=1):
            dilation = conv5_dilation if b == 5 else 1
            if b > 1:
                # pool{b-1} opens block b; pool4 keeps stride 1 when conv5 is dilated.
                stride *= 2 if not (b == 5 and conv5_dilation == 2) else 1
            layer_names = []
            for i in range(1, n_layers + 1):
                conv = Conv2d(
                    prev, ch, kernel_size=3, padding=dilation, dilation=dilation,
                    bias=not norm, norm=get_norm(norm, ch),
                )
                name = f"conv{b}_{i}"
                self.add_module(name, conv)
                layer_names.append(name)
                prev = ch
            self.stage_layers[f"conv{b}"] = layer_names
            self._out_feature_strides[f"conv{b}"] = stride
            self._out_feature_channels[f"conv{b}"] = ch
        self.freeze(freeze_at)

    def _pool(self, x, block):
        """The pooling layer that opens ``block`` (pool{block-1})."""
        if block == 5 and self._conv5_dilation == 2:
            return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return F.max_pool2d(x, kernel_size=2, stride=2)

    def forward(self, x):
        """``x``: ``(N, 3, H, W)`` -> ``{name: (N, C, H / stride, W / stride)}``."""
        if x.dim() != 4:
            raise ValueError(f"VGG16 takes (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        last = self._out_features and max(self.stage_names.index(f) for f in self._out_features)
        for b, name in enumerate(self.stage_names, start=1):
            if b > 1:
                x = self._pool(x, b)
            for layer in self.stage_layers[name]:
                x = F.relu(getattr(self, layer)(x), inplace=True)
            if name in self._out_features:
                outputs[name] = x
            if b - 1 == last:
                break
        return outputs

    @property
    def cell_offsets(self):
        """``{name: 0.5}``: 2x2/stride-2 poolings tile the input, so cell ``j`` of a level of
        stride ``s`` covers pixels ``[j*s, (j+1)*s)`` (:mod:`.cell_offsets`)."""
        return {name: 0.5 for name in self._out_features}

    def output_shape(self):
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0):
        """Freeze blocks conv1..conv{freeze_at}: no gradients, BatchNorm made frozen."""
        for name in self.stage_names[:freeze_at]:
            for layer in self.stage_layers[name]:
                module = getattr(self, layer)
                for p in module.parameters():
                    p.requires_grad = False
                FrozenBatchNorm2d.convert_frozen_batchnorm(module)
        return self


@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg, input_shape: ShapeSpec):
    """``MODEL.BACKBONE.NAME: "build_vgg16_backbone"``; reads ``MODEL.VGG.*``."""
    return VGG16(
        out_features=cfg.MODEL.VGG.OUT_FEATURES,
        conv5_dilation=cfg.MODEL.VGG.CONV5_DILATION,
        norm=cfg.MODEL.VGG.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )
