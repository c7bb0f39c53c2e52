"""From assembled windows to segment proposals in image coordinates.

Nothing here touches every window of an image: callers pick the top-K positions by
objectness first, so the cost is ``O(K * m^2)`` per scale plus pasting the kept masks.
"""
from typing import Tuple

import torch

from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

__all__ = ["mask_tight_boxes", "paste_masks_binary", "proposals_from_windows"]

# Float32 working memory of one chunk of pasted masks (see paste_masks_binary).
PASTE_CHUNK_BYTES = 64 * 1024 ** 2


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
    r0, r1 = _spans(rows)
    c0, c1 = _spans(cols)
    cell_w = (windows[:, 2] - windows[:, 0]) / m
    cell_h = (windows[:, 3] - windows[:, 1]) / m
    boxes = torch.stack(
        [windows[:, 0] + c0 * cell_w, windows[:, 1] + r0 * cell_h,
         windows[:, 0] + c1 * cell_w, windows[:, 1] + r1 * cell_h], dim=1
    )
    return boxes, rows.any(dim=1)


def proposals_from_windows(windows: Instances, *, mask_threshold: float = 0.5, nms_thresh: float = 0.8,
                           max_proposals: int = 1000) -> Instances:
    """Render selected windows (from any number of levels and scales) as the final proposals.

    Args:
        windows: the model's window selection for one image, ``Instances`` of the output frame
            ``(H, W)`` with ``mask_logits`` ``(P, m, m)`` assembled logits, ``window_boxes``
            ``(P, 4)`` window boxes in that frame, ``objectness_logits`` ``(P,)`` and
            ``levels`` ``(P,)`` (index of the feature level each window came from).

    Proposals are ranked by objectness logit; the paper's final map is objectness x mask, a
    per-window constant times the mask, so it ranks windows the same, and the mask is
    binarised on its own probability so that lower-ranked proposals keep whole masks. Masks
    are binarised at ``mask_threshold`` and empty ones dropped; NMS runs on the masks' tight
    boxes at ``nms_thresh`` across levels and scales; the top ``max_proposals`` are pasted
    (bilinear) into the image.

    Returns:
        ``Instances`` with ``pred_masks`` ``(N, H, W)`` bool, ``pred_boxes`` (tight boxes of the
        pasted masks), ``scores`` ``(N,)`` float64 descending (the objectness probability in
        float64, so logits up to ~36 keep distinct scores instead of saturating at 1.0 as
        float32 does above ~16.6), ``objectness_logits`` ``(N,)`` and ``levels`` ``(N,)``.
    """
    image_size = windows.image_size
    probs = windows.mask_logits.sigmoid()
    boxes, obj, levels = windows.window_boxes, windows.objectness_logits, windows.levels
    # Only cells overlapping the image count: the cells of a border window that fall off the
    # feature map read zero-padded logits (probability exactly 0.5, foreground at the default
    # threshold), which would inflate the NMS boxes and let windows with nothing inside the
    # image pass as non-empty and take top-N slots, to be dropped only after pasting.
    fg = (probs >= mask_threshold) & _cells_in_image(boxes, probs.shape[-1], image_size)
    tight, nonempty = mask_tight_boxes(fg, boxes)
    keep = nonempty.nonzero().squeeze(1)
    probs, tight, boxes, obj, levels = probs[keep], tight[keep], boxes[keep], obj[keep], levels[keep]

    # One class: batched_nms with equal idxs is plain NMS; it ranks by logit.
    keep = batched_nms(tight, obj, torch.zeros_like(obj, dtype=torch.long), nms_thresh)[:max_proposals]
    probs, boxes, obj, levels = probs[keep], boxes[keep], obj[keep], levels[keep]

    # fp32 pasting even under autocast: half-precision matmuls would move the threshold crossings.
    with torch.autocast(device_type=probs.device.type, enabled=False):
        masks, tight, nonempty = paste_masks_binary(probs, boxes, image_size, threshold=mask_threshold)
    keep = nonempty.nonzero().squeeze(1)
    masks, tight, obj, levels = _take_rows(masks, keep), tight[keep], obj[keep], levels[keep]

    result = Instances(image_size)
    result.pred_masks = masks
    result.pred_boxes = Boxes(tight)
    result.scores = obj.double().sigmoid()
    result.objectness_logits = obj
    result.levels = levels
    return result


def paste_masks_binary(masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int],
                       threshold: float = 0.5, chunk_bytes: int = PASTE_CHUNK_BYTES
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste ``(N, m, m)`` mask probabilities into their ``(N, 4)`` XYXY boxes and binarise.

    Same result as detectron2's ``paste_masks_in_image(masks, boxes, image_size, threshold)``
    on CPU (bilinear ``grid_sample``, ``align_corners=False``, zero padding, each mask
    confined to its box +- 1 px, ``>= threshold``) up to float rounding, but bilinear
    resampling is separable, so each mask is ``Ry @ mask @ Rx^T`` with two thin interpolation
    matrices: masks are pasted in batched matmuls over each box's own region (chunks of masks
    of similar size, at most ``chunk_bytes`` of float32 canvas each) instead of one
    ``grid_sample`` per mask (CPU) or over the whole image (GPU). The tight boxes of the binary
    masks come out of the same canvases, so nothing reads the ``(N, H, W)`` result again.

    Returns:
        masks ``(N, H, W)`` bool, tight XYXY boxes ``(N, 4)`` (exclusive right/bottom; zeros
        for empty masks) and ``nonempty`` ``(N,)`` bool.
    """
    n, m = masks.shape[0], masks.shape[-1]
    h, w = image_size
    device = masks.device
    out = torch.zeros(n, h, w, dtype=torch.bool, device=device)
    tight = torch.zeros(n, 4, dtype=torch.float32, device=device)
    nonempty = torch.zeros(n, dtype=torch.bool, device=device)
    if n == 0:
        return out, tight, nonempty
    masks, boxes = masks.float(), boxes.float()
    # Pixel region of each mask, as detectron2's skip_empty: [floor(lo) - 1, ceil(hi) + 1) in the image.
    lo = (boxes[:, :2].floor() - 1).clamp(min=0).long()  # (N, 2) x0, y0
    hi = torch.minimum((boxes[:, 2:].ceil() + 1).long(), torch.tensor([w, h], device=device))
    size = (hi - lo).clamp(min=0)  # (N, 2) region width, height
    order = (size[:, 0] * size[:, 1]).argsort(descending=True)
    lo_l, size_l, order_l = lo.tolist(), size.tolist(), order.tolist()  # one host sync

    def interp(start, length, b0, b1):
        # (c, L, m) bilinear weights of pixel centres start + j + 0.5 in [b0, b1) split into m cells,
        # computed like grid_sample (normalise to [-1, 1], then unnormalise, align_corners=False);
        # taps off the mask read 0 (zero padding), rows j >= length are zero.
        span = torch.arange(int(length.max()), device=device)
        pix = (start[:, None] + span).float() + 0.5
        g = (pix - b0[:, None]) / (b1 - b0)[:, None] * 2 - 1
        u = ((g + 1) * m - 1) / 2  # (c, L) source coordinate, in cells
        i0 = u.floor()
        inside = (span < length[:, None]).float()
        f = u - i0
        i0 = i0.long()
        # Columns 0 and m + 1 of wts collect the taps that fall off the mask; they are dropped.
        wts = torch.zeros(*u.shape, m + 2, device=device)
        wts.scatter_add_(2, (i0 + 1).clamp(0, m + 1)[..., None], ((1 - f) * inside)[..., None])
        wts.scatter_add_(2, (i0 + 2).clamp(0, m + 1)[..., None], (f * inside)[..., None])
        return wts[..., 1:m + 1]

    i = 0
    while i < n:
        # Largest regions first; grow the chunk while its canvas fits the budget.
        ch, cw, j = 0, 0, i
        while j < n:
            k = order_l[j]
            nh, nw = max(ch, size_l[k][1]), max(cw, size_l[k][0])
            if j > i and (j - i + 1) * nh * nw * 4 > chunk_bytes:
                break
            ch, cw, j = nh, nw, j + 1
        idx = order[i:j]
        i = j
        if ch == 0 or cw == 0:
            continue  # boxes entirely outside the image: empty masks
        b, st, sz = boxes[idx], lo[idx], size[idx]
        ry = interp(st[:, 1], sz[:, 1], b[:, 1], b[:, 3])  # (c, ch, m)
        rx = interp(st[:, 0], sz[:, 0], b[:, 0], b[:, 2])  # (c, cw, m)
        canvas = torch.bmm(torch.bmm(ry, masks[idx]), rx.transpose(1, 2)) >= threshold  # (c, ch, cw)
        if threshold <= 0:  # the zero rows/columns beyond each mask's own region would pass
            ys = torch.arange(ch, device=device)[None] < sz[:, 1:2]
            xs = torch.arange(cw, device=device)[None] < sz[:, 0:1]
            canvas &= ys[:, :, None] & xs[:, None, :]
        # Occupied rows / columns; amax over a uint8 view is much faster than bool any() on CPU.
        c8 = canvas.view(torch.uint8)
        rows, cols = c8.amax(dim=2) > 0, c8.amax(dim=1) > 0  # (c, ch), (c, cw)
        tight[idx], nonempty[idx] = _span_boxes(rows, cols, st), rows.any(dim=1)
        for c, k in enumerate(idx.tolist()):
            (x0, y0), (rw, rh) = lo_l[k], size_l[k]
            if rw and rh:
                out[k, y0:y0 + rh, x0:x0 + rw] = canvas[c, :rh, :rw]
    return out, tight, nonempty


def _spans(occupied: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(P, L)`` bool -> first occupied index and last + 1, each ``(P,)`` (``L`` and 0 if empty)."""
    idx = torch.arange(occupied.shape[1], device=occupied.device)
    first = torch.where(occupied, idx, occupied.shape[1]).amin(dim=1)
    end = torch.where(occupied, idx, -1).amax(dim=1) + 1
    return first, end


def _span_boxes(rows: torch.Tensor, cols: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``(c, H')`` / ``(c, W')`` occupied rows / columns of canvases placed at ``(c, 2)`` x, y
    offsets -> ``(c, 4)`` XYXY boxes (exclusive right/bottom; zeros where empty)."""
    y0, y1 = _spans(rows)
    x0, x1 = _spans(cols)
    box = torch.stack([x0 + offset[:, 0], y0 + offset[:, 1], x1 + offset[:, 0], y1 + offset[:, 1]], dim=1)
    return torch.where(rows.any(dim=1, keepdim=True), box, 0).float()


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
