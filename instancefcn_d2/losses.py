"""InstanceFCN's two logistic losses (paper: sum_i [L(p_i, p_i*) + sum_j L(S_ij, S_ij*)]).

Each term is a mean (over sampled windows; over positive windows x m^2 pixels) rather than
a sum, so that the weights of 1 and 1 keep the two on comparable scales whatever m is.
"""
import torch
import torch.nn.functional as F

__all__ = ["objectness_loss", "mask_loss"]


def objectness_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(S,)`` logits and ``(S,)`` {0, 1} labels of the sampled windows -> scalar."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="mean")


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor, score_maps: torch.Tensor) -> torch.Tensor:
    """``(P, m, m)`` assembled logits and ``(P, m, m)`` targets of positive windows -> scalar.

    With no positive window in the batch the loss is ``0 * score_maps.sum()``: zero, but still
    connected to the instance branch, so DistributedDataParallel sees every parameter used.
    """
    if mask_logits.numel() == 0:
        return score_maps.sum() * 0.0
    return F.binary_cross_entropy_with_logits(mask_logits, targets, reduction="mean")
