"""What a config's backbone is, without building its weights: the backbone is built on
PyTorch's ``meta`` device (shapes only, no memory, no initialisation work), so its strides and
which parameters each level reaches are known in milliseconds, for any depth (the pre-flight
check and the scale-coverage report use it)."""
from typing import List, Sequence

import torch

from detectron2.modeling import Backbone, build_backbone

__all__ = ["build_backbone_skeleton", "unreached_parameters"]


def build_backbone_skeleton(cfg) -> Backbone:
    """``build_backbone(cfg)`` on the ``meta`` device: ``output_shape()`` and a forward pass
    work, the parameters hold no data."""
    with torch.device("meta"):
        return build_backbone(cfg)


def unreached_parameters(backbone: Backbone, in_features: Sequence[str], in_channels: int = 3) -> List[str]:
    """Names of ``backbone``'s trainable parameters that no level of ``in_features`` depends on.

    One forward and backward pass (eval mode, on the backbone's device: free on ``meta``) of an
    input of the coarsest level's stride; a parameter left without a gradient is one that
    ``DistributedDataParallel(find_unused_parameters=False)``, detectron2's default, waits for
    forever (it fails on the second iteration).
    """
    shapes = backbone.output_shape()
    size = max([backbone.size_divisibility, 1] + [shapes[f].stride for f in shapes])
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    try:
        x = torch.zeros(1, in_channels, size, size, device=device)
        features = backbone(x)
        sum(features[f].float().sum() for f in in_features).backward()
        return [n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        for p in backbone.parameters():
            p.grad = None
        backbone.train(was_training)

