"""From assembled windows to segment proposals in image coordinates.

Nothing here touches every window of an image: callers pick the top-K positions by
objectness first, so the cost is ``O(K * m^2)`` per scale plus pasting the kept masks.
"""
from typing import Tuple

import torch

from detectron2.layers import batched_nms, paste_masks_in_image
from detectron2.structures import Boxes, Instances

__all__ = ["mask_tight_boxes", "proposals_from_windows"]


def mask_tight_boxes(masks: torch.Tensor, windows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of binary window masks, in the windows' coordinate frame.

    Args:
        masks: ``(P, m, m)`` bool masks, one per window.
        windows: ``(P, 4)`` XYXY window boxes; cell ``(u, v)`` covers ``1/m`` of each side.

    Returns:
        boxes ``(P, 4)`` and ``nonempty`` ``(P,)`` bool (boxes of empty masks are meaningless).
    """
    p, m, _ = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (P, m)
    idx = torch.arange(m, device=masks.device)
    big = torch.full_like(idx, m)
    r0 = torch.where(rows, idx, big).amin(dim=1)
    c0 = torch.where(cols, idx, big).amin(dim=1)
    r1 = torch.where(rows, idx, -1).amax(dim=1) + 1
    c1 = torch.where(cols, idx, -1).amax(dim=1) + 1
    cell_w = (windows[:, 2] - windows[:, 0]) / m
    cell_h = (windows[:, 3] - windows[:, 1]) / m
    boxes = torch.stack(
        [windows[:, 0] + c0 * cell_w, windows[:, 1] + r0 * cell_h,
         windows[:, 0] + c1 * cell_w, windows[:, 1] + r1 * cell_h], dim=1
    )
    return boxes, rows.any(dim=1)


def proposals_from_windows(mask_logits: torch.Tensor, objectness_logits: torch.Tensor,
                           windows: torch.Tensor, image_size: Tuple[int, int], *,
                           mask_threshold: float = 0.5, nms_thresh: float = 0.8,
                           max_proposals: int = 1000) -> Instances:
    """Turn assembled windows (from any number of scales) into the final proposals.

    Args:
        mask_logits: ``(P, m, m)`` assembled logits.
        objectness_logits: ``(P,)``.
        windows: ``(P, 4)`` window boxes in the output image frame.
        image_size: ``(H, W)`` of the output frame.

    The score of a proposal is its objectness probability; the paper's final map is
    objectness x mask, a per-window constant times the mask, so it ranks windows the same,
    and the mask is binarised on its own probability so that lower-ranked proposals keep
    whole masks. Masks are binarised at ``mask_threshold`` and empty ones dropped; NMS runs
    on the masks' tight boxes at ``nms_thresh`` across scales; the top ``max_proposals`` are
    pasted (bilinear) into the image.

    Returns:
        ``Instances`` with ``pred_masks`` ``(N, H, W)`` bool, ``pred_boxes`` (tight boxes of the
        pasted masks), ``scores`` ``(N,)`` descending and ``objectness_logits`` ``(N,)``.
    """
    probs = mask_logits.sigmoid()
    # Only cells overlapping the image count: the cells of a border window that fall off the
    # feature map read zero-padded logits (probability exactly 0.5, foreground at the default
    # threshold), which would inflate the NMS boxes and let windows with nothing inside the
    # image pass as non-empty and take top-N slots, to be dropped only after pasting.
    fg = (probs >= mask_threshold) & _cells_in_image(windows, probs.shape[-1], image_size)
    tight, nonempty = mask_tight_boxes(fg, windows)
    keep = nonempty.nonzero().squeeze(1)
    probs, tight, windows, obj = probs[keep], tight[keep], windows[keep], objectness_logits[keep]

    # One class: batched_nms with equal idxs is plain NMS; it sorts by score.
    keep = batched_nms(tight, obj, torch.zeros_like(obj, dtype=torch.long), nms_thresh)[:max_proposals]
    probs, windows, obj = probs[keep], windows[keep], obj[keep]

    # .bool(): with no mask to paste detectron2 returns a uint8 (0, H, W) tensor
    masks = paste_masks_in_image(probs, Boxes(windows), image_size, threshold=mask_threshold).bool()
    nonempty = masks.flatten(1).any(dim=1)
    masks, obj = masks[nonempty], obj[nonempty]

    result = Instances(image_size)
    result.pred_masks = masks
    result.pred_boxes = _masks_to_boxes(masks)
    result.scores = obj.sigmoid()
    result.objectness_logits = obj
    return result


def _cells_in_image(windows: torch.Tensor, m: int, image_size: Tuple[int, int]) -> torch.Tensor:
    """``(P, m, m)`` bool: the cells of each ``(P, 4)`` window that overlap the ``(H, W)`` image."""
    h, w = image_size
    edges = torch.arange(m + 1, device=windows.device, dtype=windows.dtype) / m
    ww, wh = windows[:, 2:3] - windows[:, 0:1], windows[:, 3:4] - windows[:, 1:2]
    xe, ye = windows[:, 0:1] + edges * ww, windows[:, 1:2] + edges * wh  # (P, m + 1) cell edges
    tx, ty = 1e-3 * ww / m, 1e-3 * wh / m  # float slack: a cell that merely touches is out
    inx = (xe[:, :-1] < w - tx) & (xe[:, 1:] > tx)
    iny = (ye[:, :-1] < h - ty) & (ye[:, 1:] > ty)
    return iny[:, :, None] & inx[:, None, :]


def _masks_to_boxes(masks: torch.Tensor) -> Boxes:
    """``(N, H, W)`` non-empty bool masks -> tight XYXY ``Boxes`` (exclusive right/bottom)."""
    if masks.shape[0] == 0:
        return Boxes(torch.zeros(0, 4, device=masks.device))
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h, w = masks.shape[1:]
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    inf = float("inf")
    x0 = torch.where(cols, xs, inf).amin(dim=1)
    x1 = torch.where(cols, xs, -inf).amax(dim=1) + 1
    y0 = torch.where(rows, ys, inf).amin(dim=1)
    y1 = torch.where(rows, ys, -inf).amax(dim=1) + 1
    return Boxes(torch.stack([x0, y0, x1, y1], dim=1))
