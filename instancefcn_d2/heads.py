"""The two fully convolutional branches on top of the backbone feature.

* :class:`InstanceBranch`: 1x1 conv (C ch, ReLU) -> 3x3 conv -> ``k^2`` instance-sensitive
  score maps, each a pixel-wise classifier for one relative position (cell) of an instance.
* :class:`ObjectnessBranch`: 3x3 conv (C ch, ReLU) -> 1x1 conv -> one logit per position:
  "is the window centred here an instance?".

Both are initialised like detectron2's RPN head: weights ~ N(0, 0.01^2), biases 0, so the
initial logits are ~0 and the backbone's ImageNet features are not swamped.
"""
import torch.nn as nn
import torch.nn.functional as F

from detectron2.config import configurable

__all__ = ["InstanceBranch", "ObjectnessBranch"]


def _init(*convs):
    for c in convs:
        nn.init.normal_(c.weight, std=0.01)
        nn.init.constant_(c.bias, 0.0)


class InstanceBranch(nn.Module):
    """``(N, C_in, H, W)`` feature -> ``(N, k*k, H, W)`` instance-sensitive score maps."""

    @configurable
    def __init__(self, *, in_channels: int, k: int, channels: int = 512):
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.reduce = nn.Conv2d(in_channels, channels, kernel_size=1)
        self.score_maps = nn.Conv2d(channels, k * k, kernel_size=3, padding=1)
        _init(self.reduce, self.score_maps)

    @classmethod
    def from_config(cls, cfg, in_channels):
        return {
            "in_channels": in_channels,
            "k": cfg.MODEL.INSTANCEFCN.K,
            "channels": cfg.MODEL.INSTANCEFCN.INSTANCE_CHANNELS,
        }

    def forward(self, x):
        return self.score_maps(F.relu(self.reduce(x)))


class ObjectnessBranch(nn.Module):
    """``(N, C_in, H, W)`` feature -> ``(N, H, W)`` objectness logits."""

    @configurable
    def __init__(self, *, in_channels: int, channels: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.logits = nn.Conv2d(channels, 1, kernel_size=1)
        _init(self.conv, self.logits)

    @classmethod
    def from_config(cls, cfg, in_channels):
        return {"in_channels": in_channels, "channels": cfg.MODEL.INSTANCEFCN.OBJECTNESS_CHANNELS}

    def forward(self, x):
        return self.logits(F.relu(self.conv(x))).squeeze(1)
