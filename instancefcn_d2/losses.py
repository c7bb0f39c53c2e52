"""InstanceFCN's two logistic losses (paper: sum_i [L(p_i, p_i*) + sum_j L(S_ij, S_ij*)]).

``i`` runs over the sampled windows, ``j`` over the ``m^2`` pixels of a positive window's
mask. The objectness term is a mean over the sampled windows. The mask term is normalised by
``normalization``:

* ``"window"`` (the paper's formula): summed over each window's ``m^2`` pixels and divided by
  the same number of sampled windows as the objectness term, so the two terms keep the paper's
  ratio (a pixel of a mask weighs as much as a window's objectness);
* ``"pixel"``: a mean over the positive windows' pixels, ``~m^2 * positive fraction``
  (~220 at m = 21, 1:1 sampling) times smaller at the same learning rate.

Cells of a window that fall off the feature map (``weights`` 0) read zero-padded logits that
no parameter produces: they are left out of both the sum and the ``"pixel"`` mean, so the
effective learning rate does not depend on how many windows of a batch touch the border.
"""
import torch
import torch.nn.functional as F

__all__ = ["MASK_LOSS_NORMALIZATIONS", "objectness_loss", "mask_loss"]

MASK_LOSS_NORMALIZATIONS = ("window", "pixel")


def objectness_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(S,)`` logits and ``(S,)`` {0, 1} labels of the sampled windows -> scalar."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="mean")


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor, score_maps: torch.Tensor,
              normalization: str = "window", num_sampled: int = 1, weights: torch.Tensor = None) -> torch.Tensor:
    """``(P, m, m)`` assembled logits and ``(P, m, m)`` targets of positive windows -> scalar.

    ``num_sampled``: windows sampled for the objectness term (the ``"window"`` normaliser).
    ``weights``: ``(P, m, m)`` bool or {0, 1}, the cells that count (on the feature map,
    :func:`~instancefcn_d2.assembling.cells_on_map`); all cells when ``None``.
    With no positive window in the batch the loss is ``0 * score_maps.sum()``: zero, but still
    connected to the instance branch, so DistributedDataParallel sees every parameter used.
    """
    if normalization not in MASK_LOSS_NORMALIZATIONS:
        raise ValueError(f"mask loss normalization must be one of {MASK_LOSS_NORMALIZATIONS}, got {normalization!r}")
    if mask_logits.numel() == 0:
        return score_maps.sum() * 0.0
    per_cell = F.binary_cross_entropy_with_logits(mask_logits, targets, reduction="none")
    if weights is None:
        weights = torch.ones_like(per_cell)
    weights = weights.to(per_cell.dtype)
    total = (per_cell * weights).sum()
    if normalization == "pixel":
        return total / weights.sum().clamp(min=1.0)
    return total / max(num_sampled, 1)
