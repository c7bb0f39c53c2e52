"""From assembled windows to segment proposals in image coordinates.

Nothing here touches every window of an image: callers pick the top-K positions by
objectness first, so the cost is ``O(K * m^2)`` per scale plus pasting the kept masks
(the pasting and the mask formats live in :mod:`instancefcn_d2.mask_rendering`).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch.profiler import record_function
from torchvision.ops import batched_nms, nms

from detectron2.structures import Boxes, Instances

from .mask_rendering import (  # noqa: F401  (paste_masks_binary, PASTE_CHUNK_BYTES: re-exported)
    MASK_FORMATS,
    PASTE_CHUNK_BYTES,
    occupied_spans,
    paste_masks_binary,
    paste_masks_rle,
    paste_tight_boxes,
)
from .suppression import BOX_NMS_TYPES, NMS_TYPES, SCORE_TYPES, mask_nms, maskness, matrix_nms_decay, window_mask_iou

__all__ = ["check_ranking", "mask_tight_boxes", "nms_first", "nms_groups_first", "paste_masks_binary", "proposals_from_windows"]


def mask_tight_boxes(masks: torch.Tensor, windows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of binary window masks, in the windows' coordinate frame.

    Args:
        masks: ``(P, m, m)`` bool masks, one per window.
        windows: ``(P, 4)`` XYXY window boxes; cell ``(u, v)`` covers ``1/m`` of each side.

    Returns:
        boxes ``(P, 4)`` and ``nonempty`` ``(P,)`` bool (boxes of empty masks are meaningless).
    """
    m = masks.shape[-1]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (P, m)
    r0, r1 = occupied_spans(rows)
    c0, c1 = occupied_spans(cols)
    cell_w = (windows[:, 2] - windows[:, 0]) / m
    cell_h = (windows[:, 3] - windows[:, 1]) / m
    boxes = torch.stack(
        [windows[:, 0] + c0 * cell_w, windows[:, 1] + r0 * cell_h,
         windows[:, 0] + c1 * cell_w, windows[:, 1] + r1 * cell_h], dim=1
    )
    return boxes, rows.any(dim=1)


def proposals_from_windows(windows: Instances, *, mask_threshold: float = 0.5, nms_thresh: float = 0.8,
                           max_proposals: int = 1000, mask_format: str = "bitmask",
                           nms_per_level_first: bool = False, nms_type: str = "box",
                           score: str = "objectness", matrix_nms_kernel: str = "gaussian",
                           matrix_nms_sigma: float = 2.0, matrix_nms_score_thresh: float = 0.0) -> Instances:
    """Render selected windows (from any number of levels and scales) as the final proposals.

    Args:
        windows: the model's window selection for one image, ``Instances`` of the output frame
            ``(H, W)`` with ``mask_logits`` ``(P, m, m)`` assembled logits, ``window_boxes``
            ``(P, 4)`` window boxes in that frame, ``objectness_logits`` ``(P,)`` and
            ``levels`` ``(P,)`` (index of the feature level each window came from); optionally
            ``scales`` ``(P,)`` (index of the test scale).
        nms_per_level_first: NMS within each (test scale, level) first, then across them on
            the survivors (:func:`nms_groups_first`); otherwise one NMS over all windows.
        mask_format: ``"bitmask"``, ``"rle"`` or ``"roi"`` (see :mod:`instancefcn_d2.mask_rendering`).
        score: ``"objectness"`` (the paper's ranking) or ``"objectness_maskness"`` (times SOLO's
            maskness, :func:`instancefcn_d2.suppression.maskness`).
        nms_type: ``"box"`` (the paper's NMS on the masks' tight boxes), ``"mask"`` (greedy NMS on
            window-mask IoU), ``"matrix"`` (Matrix NMS: scores decayed by window-mask IoU,
            then re-ranked; ``matrix_nms_kernel`` / ``_sigma``; proposals whose decayed score is
            below ``matrix_nms_score_thresh`` are dropped) or ``"box_matrix"`` (box NMS keeps the
            set, the paper's; Matrix NMS's decay re-ranks it: its cost is bounded by
            ``max_proposals``^2, not the window count). See :mod:`instancefcn_d2.suppression`.

    Proposals are ranked by ``score``; the paper's final map is objectness x mask, a
    per-window constant times the mask, so objectness ranks windows the same, and the mask is
    binarised on its own probability so that lower-ranked proposals keep whole masks. Masks
    are binarised at ``mask_threshold`` and empty ones dropped; suppression (``nms_type``, IoU
    ``nms_thresh`` for box and mask NMS) runs across levels and scales; the top
    ``max_proposals`` are pasted (bilinear) into the image.

    Returns:
        ``Instances`` with ``pred_boxes`` (tight boxes of the pasted masks, the same in every
        format), ``scores`` ``(N,)`` float64 descending (the objectness probability in
        float64, so logits up to ~36 keep distinct scores instead of saturating at 1.0 as
        float32 does above ~16.6; times the maskness and the Matrix NMS decay when chosen),
        ``objectness_logits`` ``(N,)``, ``levels`` ``(N,)`` and the
        masks: ``pred_masks`` ``(N, H, W)`` bool ("bitmask"); ``pred_masks_rle`` ``RLEMasks``
        ("rle"); ``pred_masks`` ``(N, 1, m, m)`` float probabilities + ``pred_mask_boxes``
        ``Boxes`` of the windows they live in ("roi").
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"MASK_FORMAT {mask_format!r}: expected one of {MASK_FORMATS}")
    check_ranking(nms_type, score, nms_per_level_first)
    image_size = windows.image_size
    probs = windows.mask_logits.sigmoid()
    boxes, obj, levels = windows.window_boxes, windows.objectness_logits, windows.levels
    groups = levels  # NMS groups: one per (test scale, level)
    if windows.has("scales") and levels.numel():
        groups = windows.scales * (int(levels.max()) + 1) + levels
    # Only cells overlapping the image count: the cells of a border window that fall off the
    # feature map read zero-padded logits (probability exactly 0.5, foreground at the default
    # threshold), which would inflate the NMS boxes and let windows with nothing inside the
    # image pass as non-empty and take top-N slots, to be dropped only after pasting.
    fg = (probs >= mask_threshold) & _cells_in_image(boxes, probs.shape[-1], image_size)
    tight, nonempty = mask_tight_boxes(fg, boxes)
    keep = nonempty.nonzero().squeeze(1)
    probs, fg, tight, boxes, obj, levels, groups = (
        x[keep] for x in (probs, fg, tight, boxes, obj, levels, groups))

    with record_function("instancefcn.nms"):  # inside .render; profilers can split it out
        scores = obj.double().sigmoid()
        rank = obj  # ranks as the score does; a logit does not saturate
        if score == "objectness_maskness":
            mk = maskness(probs, fg).double()
            scores = scores * mk
            rank = F.logsigmoid(obj.double()) + mk.log()
        if nms_type in BOX_NMS_TYPES and nms_per_level_first:
            keep = nms_groups_first(tight, rank, groups, nms_thresh, max_proposals)
        elif nms_type in BOX_NMS_TYPES:
            keep = nms_first(tight, rank, nms_thresh, max_proposals)
        if nms_type == "box_matrix":  # box NMS chose the set; Matrix NMS's decay re-ranks it (<= max_proposals)
            iou = window_mask_iou(fg[keep], boxes[keep], image_size)
            scores[keep] = scores[keep] * matrix_nms_decay(iou, matrix_nms_kernel, matrix_nms_sigma).double()
            keep = keep[scores[keep].argsort(descending=True, stable=True)]
        elif nms_type in ("mask", "matrix"):
            order = rank.argsort(descending=True, stable=True)
            iou = window_mask_iou(fg[order], boxes[order], image_size)
            if nms_type == "mask":
                keep = order[mask_nms(iou, nms_thresh)][:max_proposals]
            else:
                decay = matrix_nms_decay(iou, matrix_nms_kernel, matrix_nms_sigma).double()
                scores[order] = scores[order] * decay
                order = order[scores[order] >= matrix_nms_score_thresh]
                keep = order[scores[order].argsort(descending=True, stable=True)][:max_proposals]
    probs, boxes, obj, levels, scores = probs[keep], boxes[keep], obj[keep], levels[keep], scores[keep]

    result = Instances(image_size)
    # fp32 pasting even under autocast: half-precision matmuls would move the threshold crossings.
    with torch.autocast(device_type=probs.device.type, enabled=False):
        if mask_format == "bitmask":
            masks, tight, nonempty = paste_masks_binary(probs, boxes, image_size, threshold=mask_threshold)
            keep = nonempty.nonzero().squeeze(1)
            result.pred_masks = _take_rows(masks, keep)
        elif mask_format == "rle":
            rles, tight, nonempty = paste_masks_rle(probs, boxes, image_size, threshold=mask_threshold)
            keep = nonempty.nonzero().squeeze(1)
            result.pred_masks_rle = rles[keep]
        else:
            tight, nonempty = paste_tight_boxes(probs, boxes, image_size, threshold=mask_threshold)
            keep = nonempty.nonzero().squeeze(1)
            result.pred_masks = probs[keep][:, None]
            result.pred_mask_boxes = Boxes(boxes[keep])
    result.pred_boxes = Boxes(tight[keep])
    result.scores = scores[keep]
    result.objectness_logits = obj[keep]
    result.levels = levels[keep]
    return result


def check_ranking(nms_type: str, score: str, nms_per_level_first: bool = False):
    """Raise ``ValueError`` for an unknown ``nms_type`` / ``score`` or an impossible pairing."""
    if nms_type not in NMS_TYPES:
        raise ValueError(f"MODEL.INSTANCEFCN.NMS_TYPE {nms_type!r}: expected one of {NMS_TYPES}")
    if score not in SCORE_TYPES:
        raise ValueError(f"MODEL.INSTANCEFCN.SCORE {score!r}: expected one of {SCORE_TYPES}")
    if nms_per_level_first and nms_type not in BOX_NMS_TYPES:
        raise ValueError(f"MODEL.INSTANCEFCN.NMS_PER_LEVEL_FIRST applies to box NMS only, not NMS_TYPE {nms_type!r}")


def nms_first(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_kept: int) -> torch.Tensor:
    """The first ``max_kept`` indices greedy NMS keeps, best first: ``nms(boxes, scores)[:max_kept]``.

    Greedy NMS decides each box from the higher-scored boxes alone, so NMS over a score-ordered
    prefix keeps exactly the prefix's part of the full answer. NMS runs over prefixes of
    ``2 * max_kept`` boxes, doubling until ``max_kept`` survive (a prefix over half of all boxes
    becomes all of them): when the cap binds (many more windows than ``max_kept`` survive NMS)
    this skips most of NMS's quadratic work; otherwise it costs at most ~1/3 more than plain
    NMS. The result is unchanged.
    ``boxes`` ``(P, 4)``, ``scores`` ``(P,)``; ties are broken by position (stable sort).
    At ``iou_threshold >= 1`` nothing can be suppressed (NMS drops a box only at IoU *above*
    the threshold), so the answer is the ranking alone, without NMS's quadratic work.
    """
    n = scores.numel()
    order = scores.argsort(descending=True, stable=True)
    if iou_threshold >= 1.0:
        return order[:max_kept]

    def grow(t):  # a prefix over half of all windows saves little: take them all then
        return n if 2 * t > n else t

    take = grow(2 * max(max_kept, 1))
    while True:
        prefix = order[:take]
        # Descending ranks as scores: nms then visits the prefix in exactly this order.
        ranks = torch.arange(take, 0, -1, dtype=torch.float32, device=scores.device)
        kept = prefix[nms(boxes[prefix].float(), ranks, iou_threshold)]
        if kept.numel() >= max_kept or take == n:
            return kept[:max_kept]
        take = grow(2 * take)


def nms_groups_first(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float,
                     max_kept: int) -> torch.Tensor:
    """Two-pass NMS: within each group (a test scale's level), then across groups.

    ``boxes`` ``(P, 4)``, ``scores`` ``(P,)``, ``groups`` ``(P,)`` int -> kept indices, best
    first, at most ``max_kept``. Neighbouring windows of one level overlap most (a window
    side is 21 strides, so one stride apart their boxes have IoU ~0.9), so the first pass
    removes most windows in many small NMS problems, and the quadratic cross-group pass sees
    only the survivors. The survivors differ slightly from one greedy pass over all windows:
    a window suppressed in its group by one that a better window of another group then
    suppresses stays suppressed. The AR change is measured in docs/benchmarks.md.
    """
    if iou_threshold >= 1.0:  # nothing to suppress (see nms_first)
        return nms_first(boxes, scores, iou_threshold, max_kept)
    within = batched_nms(boxes.float(), scores.float(), groups, iou_threshold)
    return within[nms_first(boxes[within], scores[within], iou_threshold, max_kept)]


def _take_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x[keep]`` for sorted ``keep``, compacting in place: no second ``(N, H, W)`` tensor."""
    if keep.numel() == x.shape[0]:
        return x
    for dst, src in enumerate(keep.tolist()):
        if dst != src:
            x[dst] = x[src]
    return x[: keep.numel()]


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
