"""Mask renderers: ``(N, m, m)`` window mask probabilities -> proposal masks in image coordinates.

Three output formats (``MODEL.INSTANCEFCN.MASK_FORMAT``, see docs/mask_formats.md):

* ``"bitmask"``: ``pred_masks`` ``(N, H, W)`` bool, detectron2's usual instance-mask field.
* ``"rle"``: ``pred_masks_rle``, an :class:`RLEMasks` of N COCO RLEs (compressed, ``str``
  counts, as in COCO result files), pasted and run-length encoded a chunk of masks at a time:
  no ``(N, H, W)`` tensor is ever made.
* ``"roi"``: Mask R-CNN's pre-paste form: ``pred_masks`` ``(N, 1, m, m)`` probabilities living in
  the window boxes ``pred_mask_boxes``; :func:`proposal_bitmasks` / :func:`proposal_rles` paste on
  demand.

Every format keeps ``pred_boxes`` = the tight box of the final binary mask, computed from the
same pasted canvases, so boxes (and box AR) are identical across formats.
"""
import mmap
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F

__all__ = [
    "MASK_FORMATS",
    "PASTE_CHUNK_BYTES",
    "RLEMasks",
    "occupied_spans",
    "paste_chunks",
    "paste_masks_binary",
    "paste_masks_rle",
    "paste_tight_boxes",
    "proposal_bitmasks",
    "proposal_rles",
]

MASK_FORMATS = ("bitmask", "rle", "roi")

# Float32 working memory of one chunk of pasted masks: the largest tensor a renderer makes
# (besides the "bitmask" output itself), whatever the image size and number of proposals.
PASTE_CHUNK_BYTES = 64 * 1024 ** 2


class RLEMasks:
    """N COCO run-length encodings of one ``(H, W)`` image, usable as an ``Instances`` field.

    Each item is a dict ``{"size": [H, W], "counts": str}`` (compressed RLE with ``str``
    counts, as ``pycocotools.mask.encode`` gives after ``.decode("ascii")`` and as COCO result
    files hold): pass ``list(masks)`` to ``pycocotools.mask.decode / area / toBbox / iou``.
    Indexing takes an int, a slice, or an index / bool tensor or array (as ``Instances`` does).
    """

    def __init__(self, rles: Sequence[dict], image_size: Tuple[int, int]):
        self.rles = list(rles)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def __len__(self) -> int:
        return len(self.rles)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rles)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self.rles[item]
        if isinstance(item, slice):
            return RLEMasks(self.rles[item], self.image_size)
        idx = np.asarray(item.cpu() if isinstance(item, torch.Tensor) else item)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        return RLEMasks([self.rles[int(i)] for i in idx.reshape(-1)], self.image_size)

    def to(self, *args, **kwargs) -> "RLEMasks":
        return self  # host data: Instances.to() moves the tensors around it

    @staticmethod
    def cat(masks_list: List["RLEMasks"]) -> "RLEMasks":
        return RLEMasks([r for m in masks_list for r in m.rles], masks_list[0].image_size)

    def to_bitmasks(self) -> torch.Tensor:
        """``(N, H, W)`` bool (dense: for a few masks, e.g. to draw them)."""
        if not self.rles:
            return torch.zeros(0, *self.image_size, dtype=torch.bool)
        return torch.from_numpy(mask_util.decode(self.rles).astype(bool)).permute(2, 0, 1)

    def area(self) -> torch.Tensor:
        # One at a time: pycocotools' list form overflows a uint8 count past 255 masks under numpy 2.
        return torch.as_tensor([float(mask_util.area(r)) for r in self.rles], dtype=torch.float64)

    def __repr__(self) -> str:
        return f"RLEMasks(num={len(self)}, image_size={self.image_size})"


# ------------------------------------------------------------------------------------ pasting
def paste_chunks(masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int],
                 threshold: float = 0.5, chunk_bytes: int = None):
    """Paste ``(N, m, m)`` mask probabilities into their ``(N, 4)`` XYXY boxes and binarise, a
    chunk of masks at a time; yields ``(idx (c,), canvas (c, ch, cw) bool, lo (c, 2), size (c, 2))``.

    Mask ``idx[i]`` covers the pixels ``[lo_x, lo_x + size_w) x [lo_y, lo_y + size_h)`` of the
    image, held in ``canvas[i, :size_h, :size_w]`` (the rest of the canvas is False). Same result
    as detectron2's ``paste_masks_in_image(masks, boxes, image_size, threshold)`` on CPU (bilinear
    ``grid_sample``, ``align_corners=False``, zero padding, each mask confined to its box +- 1 px,
    ``>= threshold``) up to float rounding, but bilinear resampling is separable, so each mask is
    ``Ry @ mask @ Rx^T`` with two thin interpolation matrices, batched over chunks of masks of
    similar size with at most ``chunk_bytes`` (default :data:`PASTE_CHUNK_BYTES`) of float32
    canvas each. Runs on the masks' device (CPU or CUDA).
    """
    chunk_bytes = PASTE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    n, m = masks.shape[0], masks.shape[-1]
    h, w = image_size
    device = masks.device
    if n == 0:
        return
    masks, boxes = masks.float(), boxes.float()
    # Pixel region of each mask, as detectron2's skip_empty: [floor(lo) - 1, ceil(hi) + 1) in the image.
    lo = (boxes[:, :2].floor() - 1).clamp(min=0)  # (N, 2) x0, y0
    hi = torch.minimum(boxes[:, 2:].ceil() + 1, torch.tensor([w, h], device=device, dtype=boxes.dtype))
    if threshold > 0:
        lo, hi = _foreground_region(masks, boxes, threshold, lo, hi)
    lo, hi = lo.long(), hi.long()
    size = (hi - lo).clamp(min=0)  # (N, 2) region width, height
    # Tallest first, then widest: neighbours in this order have similar canvases.
    order = (size[:, 1] * (w + 1) + size[:, 0]).argsort(descending=True)
    size_l, order_l = size.tolist(), order.tolist()  # one host sync

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
        # Grow the chunk while its canvas fits the budget and each region fills >= 70 % of its
        # slot in it (padding is computed too: without this rule half of the canvas was padding).
        ch, cw, j = 0, 0, i
        while j < n:
            k = order_l[j]
            nh, nw = max(ch, size_l[k][1]), max(cw, size_l[k][0])
            if j > i and ((j - i + 1) * nh * nw * 4 > chunk_bytes or size_l[k][0] * size_l[k][1] < 0.7 * nh * nw):
                break
            ch, cw, j = nh, nw, j + 1
        idx = order[i:j]
        i = j
        if ch == 0 or cw == 0:
            continue  # boxes entirely outside the image: empty masks, never yielded
        b, st, sz = boxes[idx], lo[idx], size[idx]
        ry = interp(st[:, 1], sz[:, 1], b[:, 1], b[:, 3])  # (c, ch, m)
        rx = interp(st[:, 0], sz[:, 0], b[:, 0], b[:, 2])  # (c, cw, m)
        canvas = torch.bmm(torch.bmm(ry, masks[idx]), rx.transpose(1, 2)) >= threshold  # (c, ch, cw)
        if threshold <= 0:  # the zero rows/columns beyond each mask's own region would pass
            ys = torch.arange(ch, device=device)[None] < sz[:, 1:2]
            xs = torch.arange(cw, device=device)[None] < sz[:, 0:1]
            canvas &= ys[:, :, None] & xs[:, None, :]
        yield idx, canvas, st, sz


def _foreground_region(masks, boxes, threshold, lo, hi):
    """Shrink each ``[lo, hi)`` pixel region to where a pasted value can reach ``threshold``.

    A pasted pixel is a convex combination (weights summing to <= 1) of at most 2 x 2 cells, so
    it reaches a positive threshold only if one of its taps does: pixels farther than one cell
    from the cells at or above the threshold stay below it. Pasting only the rest gives the same
    masks; most windows' foreground is a small part of a large window, so this is most of the
    work saved. ``masks`` ``(N, m, m)``, ``boxes`` ``(N, 4)``, ``lo`` / ``hi`` ``(N, 2)`` x, y
    float -> the shrunk ``lo``, ``hi`` (empty where no cell reaches the threshold)."""
    m = masks.shape[-1]
    fg = masks >= threshold * (1 - 1e-6)  # float slack: a cell a rounding below still counts
    r0, r1 = occupied_spans(fg.any(dim=2))  # (N,) occupied cell rows [r0, r1); m, 0 when empty
    c0, c1 = occupied_spans(fg.any(dim=1))
    cell = (boxes[:, 2:] - boxes[:, :2]) / m  # (N, 2) cell width, height
    first = torch.stack([c0, r0], dim=1).to(boxes.dtype) - 1  # one cell of taps either side
    end = torch.stack([c1, r1], dim=1).to(boxes.dtype) + 1
    sub_lo = (boxes[:, :2] + first * cell).floor() - 1
    sub_hi = (boxes[:, :2] + end * cell).ceil() + 1
    return torch.maximum(lo, sub_lo), torch.minimum(hi, sub_hi)


def _chunk_tight_boxes(canvas: torch.Tensor, lo: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tight XYXY boxes ``(c, 4)`` (exclusive right/bottom; zeros where empty) and ``nonempty (c,)``."""
    # Occupied rows / columns; amax over a uint8 view is much faster than bool any() on CPU.
    c8 = canvas.view(torch.uint8)
    rows, cols = c8.amax(dim=2) > 0, c8.amax(dim=1) > 0  # (c, ch), (c, cw)
    return _span_boxes(rows, cols, lo), rows.any(dim=1)


def _outputs(n: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    return (torch.zeros(n, 4, dtype=torch.float32, device=device),
            torch.zeros(n, dtype=torch.bool, device=device))


def paste_masks_binary(masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int],
                       threshold: float = 0.5, chunk_bytes: int = None
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste (see :func:`paste_chunks`, ``chunk_bytes`` its canvas budget) into ``(N, H, W)`` bool masks.

    Returns:
        masks ``(N, H, W)`` bool, tight XYXY boxes ``(N, 4)`` (exclusive right/bottom; zeros
        for empty masks) and ``nonempty`` ``(N,)`` bool.
    """
    h, w = image_size
    out = _zeros_bool(masks.shape[0], h, w, masks.device)
    tight, nonempty = _outputs(masks.shape[0], masks.device)
    for idx, canvas, lo, size in paste_chunks(masks, boxes, image_size, threshold, chunk_bytes):
        tight[idx], nonempty[idx] = _chunk_tight_boxes(canvas, lo)
        canvas = canvas.contiguous()
        _, ch, cw = canvas.shape
        for c, ((x0, y0), (rw, rh), k) in enumerate(zip(lo.tolist(), size.tolist(), idx.tolist())):
            if rw and rh:  # out[k, y0:y0 + rh, x0:x0 + rw] = canvas[c, :rh, :rw], as one view each:
                # thousands of masks, so 3 dispatcher calls per mask instead of ~13
                out.as_strided((rh, rw), (w, 1), out.storage_offset() + (k * h + y0) * w + x0).copy_(
                    canvas.as_strided((rh, rw), (cw, 1), canvas.storage_offset() + c * ch * cw))
    return out, tight, nonempty


def _zeros_bool(n: int, h: int, w: int, device) -> torch.Tensor:
    """``(n, h, w)`` bool zeros. On the CPU they come from an anonymous memory map, whose pages
    the kernel zeroes on first touch: the background of a mask stack (most of it) then costs
    no memset pass and no resident memory (at 5000 x 480 x 640, torch.zeros alone is ~0.7 s)."""
    if torch.device(device).type != "cpu" or n * h * w == 0:
        return torch.zeros(n, h, w, dtype=torch.bool, device=device)
    return torch.frombuffer(mmap.mmap(-1, n * h * w), dtype=torch.bool).view(n, h, w)


def paste_tight_boxes(masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int],
                      threshold: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes ``(N, 4)`` and ``nonempty`` ``(N,)`` of the pasted masks, keeping no mask."""
    tight, nonempty = _outputs(masks.shape[0], masks.device)
    for idx, canvas, lo, _ in paste_chunks(masks, boxes, image_size, threshold):
        tight[idx], nonempty[idx] = _chunk_tight_boxes(canvas, lo)
    return tight, nonempty


def paste_masks_rle(masks: torch.Tensor, boxes: torch.Tensor, image_size: Tuple[int, int],
                    threshold: float = 0.5) -> Tuple[RLEMasks, torch.Tensor, torch.Tensor]:
    """Paste (see :func:`paste_chunks`) straight into COCO RLEs, a chunk at a time.

    The runs of each canvas are read off on the masks' device, column-major as COCO stores
    them, then compressed by ``pycocotools.mask.frPyObjects``: equal to ``mask.encode`` of the
    dense mask, at a cost proportional to the masks' regions, not to ``N * H * W``.

    Returns:
        :class:`RLEMasks` (N), tight boxes ``(N, 4)`` and ``nonempty`` ``(N,)``, as
        :func:`paste_masks_binary`.
    """
    h, w = image_size
    n = masks.shape[0]
    tight, nonempty = _outputs(n, masks.device)
    empty = {"size": [h, w], "counts": [h * w]}
    uncompressed = [empty] * n  # masks never yielded (boxes off the image) stay empty
    for idx, canvas, lo, _ in paste_chunks(masks, boxes, image_size, threshold):
        tight[idx], nonempty[idx] = _chunk_tight_boxes(canvas, lo)
        for k, counts in zip(idx.tolist(), _run_lengths(canvas, lo, image_size)):
            uncompressed[k] = {"size": [h, w], "counts": counts}
    rles = mask_util.frPyObjects(uncompressed, h, w) if n else []
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")  # str, as COCO result files hold them
    return RLEMasks(rles, image_size), tight, nonempty


def _run_lengths(canvas: torch.Tensor, lo: torch.Tensor, image_size: Tuple[int, int]) -> List[List[int]]:
    """COCO (column-major, zeros first) run lengths of each ``(c, ch, cw)`` canvas placed at
    ``(c, 2)`` x, y offsets in an ``(H, W)`` image."""
    h, w = image_size
    # A zero row above and below each column: every run of ones starts and ends in the column.
    cols = F.pad(canvas.transpose(1, 2).to(torch.uint8), (1, 1))  # (c, cw, ch + 2)
    k, j, r = (cols[:, :, 1:] != cols[:, :, :-1]).nonzero(as_tuple=True)  # sorted by mask, column, row
    pos = (lo[k, 0] + j) * h + lo[k, 1] + r  # flat column-major index where a run starts
    # A run ending at a column's bottom row and one starting at the next column's top row meet
    # at the same index: one run in column-major order, so both boundaries go.
    same = (pos[1:] == pos[:-1]) & (k[1:] == k[:-1])
    keep = torch.ones_like(pos, dtype=torch.bool)
    keep[1:] &= ~same
    keep[:-1] &= ~same
    pos, k = pos[keep].cpu().numpy(), k[keep].cpu().numpy()
    splits = np.searchsorted(k, np.arange(1, canvas.shape[0]))
    out = []
    for p in np.split(pos, splits):
        counts = np.diff(np.concatenate([[0], p, [h * w]]))
        if len(counts) > 1 and counts[-1] == 0:  # mask reaches the last pixel: no trailing zeros
            counts = counts[:-1]
        out.append(counts.tolist())
    return out


def occupied_spans(occupied: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(P, L)`` bool -> first occupied index and last + 1, each ``(P,)`` (``L`` and 0 if empty)."""
    idx = torch.arange(occupied.shape[1], device=occupied.device)
    first = torch.where(occupied, idx, occupied.shape[1]).amin(dim=1)
    end = torch.where(occupied, idx, -1).amax(dim=1) + 1
    return first, end


def _span_boxes(rows: torch.Tensor, cols: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``(c, H')`` / ``(c, W')`` occupied rows / columns of canvases placed at ``(c, 2)`` x, y
    offsets -> ``(c, 4)`` XYXY boxes (exclusive right/bottom; zeros where empty)."""
    y0, y1 = occupied_spans(rows)
    x0, x1 = occupied_spans(cols)
    box = torch.stack([x0 + offset[:, 0], y0 + offset[:, 1], x1 + offset[:, 0], y1 + offset[:, 1]], dim=1)
    return torch.where(rows.any(dim=1, keepdim=True), box, 0).float()


# ---------------------------------------------------------------------- consumers, any format
def _roi_fields(instances):
    if not instances.has("pred_mask_boxes"):
        raise ValueError("ROI masks (pred_masks (N, 1, m, m)) need pred_mask_boxes, the boxes they live in")
    return instances.pred_masks[:, 0], instances.pred_mask_boxes.tensor


def proposal_rles(instances, threshold: float = 0.5) -> List[dict]:
    """COCO RLEs (``str`` counts) of one image's proposals in any mask format.

    ``threshold`` binarises ``"roi"`` probabilities (use the model's ``MASK_THRESHOLD``) and
    soft ``(N, H, W)`` masks; ``"bitmask"`` masks are encoded with ``pycocotools.mask.encode``,
    64 at a time.
    """
    if instances.has("pred_masks_rle"):
        return list(instances.pred_masks_rle)
    if not instances.has("pred_masks"):
        raise ValueError("instances carry no masks: expected pred_masks or pred_masks_rle")
    masks = instances.pred_masks
    if masks.dim() == 4:
        probs, boxes = _roi_fields(instances)
        return list(paste_masks_rle(probs, boxes, instances.image_size, threshold)[0])
    rles = []
    for start in range(0, len(masks), 64):  # a small transient uint8 copy, whatever N is
        chunk = masks[start:start + 64]
        chunk = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
        if chunk.dtype != np.bool_ and chunk.dtype != np.uint8:
            chunk = chunk >= threshold  # soft masks: binarise as the model does
        # pycocotools wants (H, W, N), Fortran order, uint8.
        for rle in mask_util.encode(np.asfortranarray(np.transpose(chunk, (1, 2, 0)).astype(np.uint8))):
            rle["counts"] = rle["counts"].decode("ascii")  # bytes are not JSON-serialisable
            rles.append(rle)
    return rles


def proposal_bitmasks(instances, threshold: float = 0.5) -> torch.Tensor:
    """``(N, H, W)`` bool masks of one image's proposals in any mask format (dense: index the
    instances first when only a few are needed, e.g. ``proposal_bitmasks(instances[:20])``)."""
    if instances.has("pred_masks_rle"):
        return instances.pred_masks_rle.to_bitmasks()
    masks = instances.pred_masks
    if masks.dim() == 4:
        probs, boxes = _roi_fields(instances)
        return paste_masks_binary(probs, boxes, instances.image_size, threshold)[0]
    return masks if masks.dtype == torch.bool else masks >= threshold
