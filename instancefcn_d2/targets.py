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
  (a crowd is never a positive, nor is its inside a clean negative) and windows outside the
  image's window grid (:func:`window_grid_size`: the same set inference scores).

On a feature pyramid every level has its own windows (``S = m * stride`` of that level) and
the rule is applied to all of them together, so an object is positive on the level whose
window fits it.

The mask target of a positive window is its own object's mask, cropped to the window and
resized to ``m x m``; other objects in the window are background. That is what makes the
score maps instance-sensitive.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F

from detectron2.config import configurable
from detectron2.modeling.sampling import subsample_labels
from detectron2.structures import BitMasks

__all__ = ["window_boxes", "window_boxes_at", "window_grid_size", "inside_windows", "check_window_size",
           "WindowLabeler", "mask_targets", "sample_windows"]


def window_grid_size(image_size: Tuple[int, int], stride: int, offset: float = 0.5) -> Tuple[int, int]:
    """``(rows, cols)`` of the windows that belong to an ``(h, w)`` image on a map of ``stride``.

    Window ``(y, x)`` is centred at pixel ``((x + offset) * stride, (y + offset) * stride)``,
    the centre of its feature cell (``offset``: :func:`~instancefcn_d2.backbone.level_cell_offsets`,
    0.5 on VGG-16's 2x2 poolings, 0 on ResNet); it belongs to the image when that centre lies
    inside it (at least one window per axis). Training labels exactly these windows and
    inference scores exactly these, so no scored window goes unsupervised.
    """
    return tuple(max(1, math.ceil(n / stride - offset)) for n in image_size)


def inside_windows(height: int, width: int, image_size: Tuple[int, int], stride: int, offset: float = 0.5,
                   device=None) -> torch.Tensor:
    """``(height * width,)`` bool, row-major: the windows of an ``(height, width)`` map that
    belong to the ``image_size`` image (:func:`window_grid_size`), on ``device``."""
    rows, cols = window_grid_size(image_size, stride, offset)
    return ((torch.arange(height, device=device) < rows)[:, None]
            & (torch.arange(width, device=device) < cols)[None, :]).reshape(-1)


def check_window_size(window_size: int):
    """An even ``m`` has no centre cell: its window would be centred half a cell off the
    position whose objectness scores it."""
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"MODEL.INSTANCEFCN.WINDOW_SIZE must be odd (a window is centred on its middle "
                         f"cell), got {window_size}")


def window_boxes_at(ys: torch.Tensor, xs: torch.Tensor, stride: int, window_size: int,
                    offset: float = 0.5) -> torch.Tensor:
    """``(P,)`` feature rows and columns -> ``(P, 4)`` XYXY boxes, in input pixels, of the
    windows centred there.

    Window cell ``u`` reads feature cell ``y - m//2 + u``, centred at
    ``(y - m//2 + u + offset) * stride``: the box's cells are centred on the cells they read.
    """
    check_window_size(window_size)
    lo = window_size // 2
    x0 = (xs.to(torch.float32) - lo + offset - 0.5) * stride
    y0 = (ys.to(torch.float32) - lo + offset - 0.5) * stride
    side = float(window_size * stride)
    return torch.stack([x0, y0, x0 + side, y0 + side], dim=-1)


def window_boxes(height: int, width: int, stride: int, window_size: int, offset: float = 0.5,
                 device=None) -> torch.Tensor:
    """``(H*W, 4)`` XYXY boxes, in input pixels, of the windows centred at each feature cell,
    row-major over the ``(H, W)`` feature map (:func:`window_boxes_at`)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return window_boxes_at(ys.reshape(-1), xs.reshape(-1), stride, window_size, offset)


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
                 inside: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            windows: ``(P, 4)`` square window boxes, from :func:`window_boxes` (one level or
                several levels concatenated: sides may differ).
            gt_boxes: ``(G, 4)`` XYXY boxes of the non-crowd objects.
            crowd_boxes: ``(C, 4)`` XYXY boxes of crowd regions.
            inside: ``(P,)`` bool: windows that belong to the image (:func:`inside_windows`);
                the others (padding) are ignored.

        Returns:
            labels ``(P,)`` int8 in {1, 0, -1}; matched ``(P,)`` long: the object index of
            each positive window (0 elsewhere).
        """
        p = windows.shape[0]
        device = windows.device
        side = (windows[:, 2] - windows[:, 0])[:, None]  # (P, 1) window sides
        wc = (windows[:, :2] + windows[:, 2:]) / 2  # (P, 2) window centres
        labels = torch.zeros(p, dtype=torch.int8, device=device)
        matched = torch.zeros(p, dtype=torch.long, device=device)

        if gt_boxes.numel():
            gc = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (G, 2)
            offset = (wc[:, None, :] - gc[None, :, :]).abs().amax(dim=2) / side  # (P, G)
            size = (gt_boxes[:, 2:] - gt_boxes[:, :2]).amax(dim=1).clamp(min=1e-6)
            scale = torch.log2(size[None, :] / (self.canonical_ratio * side)).abs()  # (P, G)
            pos = (offset <= self.pos_center_offset) & (scale <= self.pos_scale_log2)
            near = (offset <= self.neg_center_offset) & (scale <= self.neg_scale_log2)
            # Among qualifying objects pick the most centred one (scale breaks ties).
            cost = torch.where(pos, offset + 1e-3 * scale, torch.full_like(offset, float("inf")))
            best_cost, best = cost.min(dim=1)
            is_pos = torch.isfinite(best_cost)
            labels[near.any(dim=1)] = -1
            labels[is_pos] = 1
            matched[is_pos] = best[is_pos]

        outside = ~inside.to(device)
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
    and resampled to ``m x m``, on the device of ``windows``.
    """
    m = window_size
    if matched.numel() == 0:
        return torch.zeros(0, m, m, device=windows.device)
    if isinstance(gt_masks, BitMasks):
        return _bitmask_targets(gt_masks.tensor, matched, windows, m)
    # Polygons are rasterised on the CPU directly at m x m inside each window.
    return gt_masks[matched.cpu()].crop_and_resize(windows, m).to(device=windows.device, dtype=torch.float32)


def _bitmask_targets(masks: torch.Tensor, matched: torch.Tensor, windows: torch.Tensor, m: int) -> torch.Tensor:
    """``(G, H, W)`` bool masks -> ``(P, m, m)`` targets of the ``(P, 4)`` windows.

    A window is ``m x m`` cells of ``s x s`` pixels at integer pixel positions, so
    ``BitMasks.crop_and_resize`` (ROIAlign, aligned, adaptive sampling) averages exactly the
    ``s x s`` pixels of each cell: here the same average is an ``avg_pool`` over a gathered
    ``(P, S, S)`` crop, computed on the windows' device without the ``(P, H, W)`` float copy
    that ROIAlign over whole masks would make (~550 MB per image at 900 x 1200).
    """
    device = windows.device
    masks = masks.to(device)
    h, w = masks.shape[-2:]
    out = torch.empty(len(windows), m, m, device=device)
    sides = (windows[:, 2] - windows[:, 0]).round().long()
    for side in sides.unique().tolist():  # one group per pyramid level
        sel = (sides == side).nonzero().squeeze(1)
        cell = side // m
        if cell * m != side:
            raise ValueError(f"window side {side} px is not a multiple of window_size {m}")
        x0y0 = windows[sel, :2].round().long()  # (p, 2)
        offs = torch.arange(side, device=device)
        ys = x0y0[:, 1:2] + offs  # (p, S)
        xs = x0y0[:, 0:1] + offs
        valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
        crop = masks[matched[sel].to(device)[:, None, None], ys.clamp(0, h - 1)[:, :, None],
                     xs.clamp(0, w - 1)[:, None, :]] & valid  # (p, S, S) bool
        # >= 0.5 as BitMasks.crop_and_resize binarises its ROIAlign output.
        out[sel] = (F.avg_pool2d(crop[:, None].float(), cell)[:, 0] >= 0.5).float()
    return out


def sample_windows(labels: torch.Tensor, num_samples: int, positive_fraction: float):
    """Random ``num_samples`` windows at ``positive_fraction`` positives.

    When an image has too few positives (or none), the remaining slots are filled with
    negatives (detectron2's ``subsample_labels``), so every image contributes
    ``num_samples`` objectness samples when it has that many labelled windows.

    Returns ``(pos_idx, neg_idx)`` index tensors.
    """
    return subsample_labels(labels.long(), num_samples, positive_fraction, 0)
