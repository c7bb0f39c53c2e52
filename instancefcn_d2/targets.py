"""Training targets: which sliding windows are instances, and their m x m mask targets.

The positive-window rule (DeepMask-style, all thresholds configurable):

* a window is **positive** for a (non-crowd) object when the object's box centre is within
  ``pos_center_offset * S`` of the window centre on both axes, *and* the object's longer box
  side is within ``2^(+-pos_scale_log2)`` of the canonical size ``canonical_ratio * S``
  (``S`` = window side in pixels = ``m * stride``). If several objects qualify, the one
  closest to the centre wins;
* a window is **negative** when, for *every* object, the centre is farther than
  ``neg_center_offset * S`` or the size is off by more than ``2^(+-neg_scale_log2)``;
* everything in between is **ignored**, and so are windows centred inside a crowd region
  (a crowd is never a positive, nor is its inside a clean negative) and windows centred
  outside the image (padding).

The mask target of a positive window is its own object's mask, cropped to the window and
resized to ``m x m``; other objects in the window are background. That is what makes the
score maps instance-sensitive.
"""
from typing import Tuple

import torch

from detectron2.config import configurable
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import Boxes

__all__ = ["window_boxes", "WindowLabeler", "mask_targets", "sample_windows"]


def window_boxes(height: int, width: int, stride: int, window_size: int, device=None) -> torch.Tensor:
    """``(H*W, 4)`` XYXY boxes, in input pixels, of the windows centred at each feature cell.

    Row-major over the ``(H, W)`` feature map. Window cells ``y - m//2 .. y - m//2 + m - 1``
    cover input pixels ``[(y - m//2) * stride, (y - m//2 + m) * stride)``.
    """
    lo = window_size // 2
    ys = (torch.arange(height, device=device, dtype=torch.float32) - lo) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) - lo) * stride
    y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
    side = float(window_size * stride)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=-1).reshape(-1, 4)


class WindowLabeler:
    """Labels every window of a feature map as positive (1), negative (0) or ignored (-1)."""

    @configurable
    def __init__(self, *, canonical_ratio: float = 128.0 / 224.0, pos_center_offset: float = 16.0 / 224.0,
                 neg_center_offset: float = 32.0 / 224.0, pos_scale_log2: float = 0.25,
                 neg_scale_log2: float = 1.0):
        if not (0 <= pos_center_offset <= neg_center_offset and 0 <= pos_scale_log2 <= neg_scale_log2):
            raise ValueError(
                "Need 0 <= positive <= negative thresholds, got center offsets "
                f"({pos_center_offset}, {neg_center_offset}), scales ({pos_scale_log2}, {neg_scale_log2})"
            )
        self.canonical_ratio = canonical_ratio
        self.pos_center_offset = pos_center_offset
        self.neg_center_offset = neg_center_offset
        self.pos_scale_log2 = pos_scale_log2
        self.neg_scale_log2 = neg_scale_log2

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.INSTANCEFCN
        return {
            "canonical_ratio": c.CANONICAL_OBJECT_RATIO,
            "pos_center_offset": c.POSITIVE_CENTER_OFFSET,
            "neg_center_offset": c.NEGATIVE_CENTER_OFFSET,
            "pos_scale_log2": c.POSITIVE_SCALE_LOG2,
            "neg_scale_log2": c.NEGATIVE_SCALE_LOG2,
        }

    def __call__(self, windows: torch.Tensor, gt_boxes: torch.Tensor, crowd_boxes: torch.Tensor,
                 image_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            windows: ``(P, 4)`` window boxes (all the same side), from :func:`window_boxes`.
            gt_boxes: ``(G, 4)`` XYXY boxes of the non-crowd objects.
            crowd_boxes: ``(C, 4)`` XYXY boxes of crowd regions.
            image_size: ``(h, w)`` of the valid (unpadded) image.

        Returns:
            labels ``(P,)`` int8 in {1, 0, -1}; matched ``(P,)`` long: the object index of
            each positive window (0 elsewhere).
        """
        p = windows.shape[0]
        device = windows.device
        side = windows[0, 2] - windows[0, 0] if p else torch.tensor(1.0)
        wc = (windows[:, :2] + windows[:, 2:]) / 2  # (P, 2) window centres
        labels = torch.zeros(p, dtype=torch.int8, device=device)
        matched = torch.zeros(p, dtype=torch.long, device=device)

        if gt_boxes.numel():
            gc = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (G, 2)
            offset = (wc[:, None, :] - gc[None, :, :]).abs().amax(dim=2) / side  # (P, G)
            size = (gt_boxes[:, 2:] - gt_boxes[:, :2]).amax(dim=1).clamp(min=1e-6)
            scale = torch.log2(size / (self.canonical_ratio * side)).abs()[None, :]  # (1, G)
            pos = (offset <= self.pos_center_offset) & (scale <= self.pos_scale_log2)
            near = (offset <= self.neg_center_offset) & (scale <= self.neg_scale_log2)
            # Among qualifying objects pick the most centred one (scale breaks ties).
            cost = torch.where(pos, offset + 1e-3 * scale, torch.full_like(offset, float("inf")))
            best_cost, best = cost.min(dim=1)
            is_pos = torch.isfinite(best_cost)
            labels[near.any(dim=1)] = -1
            labels[is_pos] = 1
            matched[is_pos] = best[is_pos]

        h, w = image_size
        outside = (wc[:, 0] >= w) | (wc[:, 1] >= h)
        in_crowd = torch.zeros(p, dtype=torch.bool, device=device)
        if crowd_boxes.numel():
            in_crowd = (
                (wc[:, None, 0] >= crowd_boxes[None, :, 0]) & (wc[:, None, 0] <= crowd_boxes[None, :, 2])
                & (wc[:, None, 1] >= crowd_boxes[None, :, 1]) & (wc[:, None, 1] <= crowd_boxes[None, :, 3])
            ).any(dim=1)
        labels[(outside | in_crowd) & (labels != 1)] = -1
        return labels, matched


def mask_targets(gt_masks, matched: torch.Tensor, windows: torch.Tensor, window_size: int) -> torch.Tensor:
    """``(P,)`` object indices + ``(P, 4)`` windows -> ``(P, m, m)`` float mask targets.

    ``gt_masks``: detectron2 ``PolygonMasks`` or ``BitMasks`` of the image's objects.
    Each object's mask is cropped to its window (outside the image counts as background)
    and resampled to ``m x m``.
    """
    if matched.numel() == 0:
        return torch.zeros(0, window_size, window_size, device=windows.device)
    sel = gt_masks[matched]
    return sel.crop_and_resize(windows, window_size).to(device=windows.device, dtype=torch.float32)


def sample_windows(labels: torch.Tensor, num_samples: int, positive_fraction: float):
    """Random ``num_samples`` windows at ``positive_fraction`` positives.

    When an image has too few positives (or none), the remaining slots are filled with
    negatives (detectron2's ``subsample_labels``), so every image contributes
    ``num_samples`` objectness samples when it has that many labelled windows.

    Returns ``(pos_idx, neg_idx)`` index tensors.
    """
    return subsample_labels(labels.long(), num_samples, positive_fraction, 0)
