"""Ranking and mask-aware suppression of segment proposals, on their window masks.

The paper ranks windows by objectness and suppresses with NMS on the masks' tight boxes at IoU
0.8 (``NMS_TYPE "box"``, in :mod:`instancefcn_d2.inference`). Box IoU 0.8 keeps near-duplicate
masks, so the first proposals repeat a few objects. Here:

* :func:`maskness`: SOLO's mask confidence, the mean foreground probability inside the binarised
  mask, multiplied into the objectness (``SCORE "objectness_maskness"``);
* :func:`window_mask_iou`: mask IoU of every pair of window masks, each placed in the image by
  its window box, without pasting full-image masks;
* :func:`mask_nms`: greedy NMS on that mask IoU (``NMS_TYPE "mask"``);
* :func:`matrix_nms_decay`: SOLOv2's Matrix NMS (Wang et al., NeurIPS 2020): each score decayed
  by its IoU with better masks, compensated by how suppressed those masks are themselves; one
  matrix operation, nothing removed (``NMS_TYPE "matrix"``); or applied after box NMS to the
  proposals it keeps, re-ranking them (``NMS_TYPE "box_matrix"``: the paper's set, a cost bounded
  by the proposal cap instead of the window count).

Every function takes its masks in score order (best first) and runs on their device.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .mask_rendering import occupied_spans

__all__ = ["BOX_NMS_TYPES", "MATRIX_NMS_KERNELS", "NMS_TYPES", "SCORE_TYPES", "mask_nms", "maskness",
           "matrix_nms_decay",
           "window_mask_iou"]

NMS_TYPES = ("box", "mask", "matrix", "box_matrix")
BOX_NMS_TYPES = ("box", "box_matrix")  # the types whose kept set is box NMS's
SCORE_TYPES = ("objectness", "objectness_maskness")
MATRIX_NMS_KERNELS = ("linear", "gaussian")

# Working memory of one tile's rasterised masks in window_mask_iou, and of Matrix NMS's column chunks.
IOU_CHUNK_BYTES = 32 * 1024 ** 2


def maskness(probs: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """SOLO's maskness: ``(P, m, m)`` probabilities, ``(P, m, m)`` bool binarised masks -> ``(P,)``
    mean probability over each mask's foreground cells (0 for an empty mask)."""
    fg = foreground.to(probs.dtype)
    return (probs * fg).flatten(1).sum(1) / fg.flatten(1).sum(1).clamp(min=1)


def window_mask_iou(masks: torch.Tensor, windows: torch.Tensor, image_size: Tuple[int, int],
                    chunk_bytes: int = None) -> torch.Tensor:
    """Mask IoU of every pair of binary window masks placed in the image by their windows.

    Args:
        masks: ``(P, m, m)`` bool window masks (cells outside the image already False).
        windows: ``(P, 4)`` XYXY window boxes in the ``(H, W)`` image; cell ``(u, v)`` of a mask
            covers ``1/m`` of each side.
        chunk_bytes: working memory of one tile's rasterised masks (default ``IOU_CHUNK_BYTES``);
            larger tiles are split into groups of masks.

    Returns:
        ``(P, P)`` float32 IoU (0 where both masks are empty).

    The masks are rasterised onto one grid over the image whose cell is the smallest window cell
    (a level's stride in the image frame): each grid cell takes the value of the window cell under
    its centre. The grid is cut into tiles; in each tile the masks that reach it are gathered
    and their intersections are one matrix product, added into the ``(P, P)`` result (a mask
    reaches few tiles, so this does a fraction of one product over the whole grid). On a feature
    pyramid at one test scale every window's cells are unions of grid cells (window origins are
    multiples of their stride, strides are multiples of the finest), so this is the exact IoU of
    the blocky window masks. With an image pyramid the scales' cells do not nest: a coarse cell
    is then cut at the nearest fine grid line (at most half a fine cell per side). The pasted
    masks differ from the blocky ones by the bilinear upsampling of the boundary (within one
    cell), which moves IoUs a little (tests bound it).
    """
    chunk_bytes = IOU_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    p, m = masks.shape[0], masks.shape[-1]
    device = masks.device
    if p == 0:
        return torch.zeros(0, 0, device=device)
    h, w = image_size
    windows = windows.float()
    cell = (windows[:, 2:] - windows[:, :2]) / m  # (P, 2) cell width, height
    gx, gy = (float(v) for v in cell.amin(dim=0).tolist())  # one host sync
    nx, ny = max(1, math.ceil(w / gx - 1e-6)), max(1, math.ceil(h / gy - 1e-6))

    def cells_under(n, g, start, size):
        # (P, n) window cell under each grid centre; m (a zero row / column of the padded mask) if none.
        centres = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * g
        idx = ((centres[None] - start[:, None]) / size[:, None]).floor()
        return torch.where((idx >= 0) & (idx < m), idx, m).long()

    cols = cells_under(nx, gx, windows[:, 0], cell[:, 0])
    rows = cells_under(ny, gy, windows[:, 1], cell[:, 1])
    padded = F.pad(masks.to(torch.uint8), (0, 1, 0, 1))  # (P, m + 1, m + 1): row and column m are zero
    by_row = torch.gather(padded, 1, rows[:, :, None].expand(-1, -1, m + 1))  # (P, ny, m + 1) uint8
    # Grid rows / columns each mask occupies: [first, end).
    r0, r1 = occupied_spans(by_row.amax(dim=2) > 0)  # (P,) each
    c0, c1 = occupied_spans(torch.gather(padded.amax(dim=1), 1, cols) > 0)
    tile = max(16, math.ceil(max(ny, nx) / 8))  # at most 8 x 8 tiles: bounded loop overhead
    bounds = torch.stack([r0, r1, c0, c1], dim=1).tolist()  # one host sync; tiles are chosen on the host
    per_tile = {}
    for k, (a0, a1, b0, b1) in enumerate(bounds):
        for ty in range(a0 // tile, (a1 - 1) // tile + 1 if a1 > a0 else 0):
            for tx in range(b0 // tile, (b1 - 1) // tile + 1 if b1 > b0 else 0):
                per_tile.setdefault((ty, tx), []).append(k)

    def raster(idx, y0, y1, x0, x1):  # (q,) masks -> (q, th * tw) float32 grid cells of one tile
        a = by_row[idx, y0:y1]  # (q, th, m + 1)
        return torch.gather(a, 2, cols[idx, None, x0:x1].expand(-1, y1 - y0, -1)).flatten(1).float()

    inter = torch.zeros(p, p, device=device)
    area = torch.zeros(p, device=device)
    for (ty, tx), members in per_tile.items():
        y0, x0 = ty * tile, tx * tile
        y1, x1 = min(ny, y0 + tile), min(nx, x0 + tile)
        group = max(1, chunk_bytes // (4 * (y1 - y0) * (x1 - x0)))
        members = torch.as_tensor(members, device=device)
        for g0 in range(0, members.numel(), group):
            idx = members[g0:g0 + group]
            a = raster(idx, y0, y1, x0, x1)
            area.index_add_(0, idx, a.sum(dim=1))
            for h0 in range(0, members.numel(), group):  # every pair of groups (one, mostly)
                jdx = members[h0:h0 + group]
                b = a if h0 == g0 else raster(jdx, y0, y1, x0, x1)
                inter.index_put_((idx[:, None], jdx[None, :]), a @ b.t(), accumulate=True)
    union = area[:, None] + area[None, :] - inter
    return inter / union.clamp(min=1)  # union >= 1 grid cell unless both masks are empty (inter 0)


def mask_nms(iou: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS on a ``(P, P)`` IoU matrix of masks in score order -> ``(P,)`` bool kept.

    A mask is kept when no kept better mask overlaps it by more than ``iou_threshold``. Solved
    as Cluster-NMS (Zheng et al., 2021) does, with matrix steps instead of a loop over masks:
    starting from "all kept", each step (one matrix-vector product) keeps the masks no kept
    better mask suppresses; after
    step t the first t masks are decided, and the fixed point is greedy NMS's answer (a few
    steps in practice: the chains of suppression are short).
    """
    over = torch.triu(iou > iou_threshold, diagonal=1).float()  # over[i, j]: better mask i suppresses j if kept
    keep = torch.ones(iou.shape[0], dtype=torch.bool, device=iou.device)
    for _ in range(iou.shape[0]):
        new = (keep.float() @ over) == 0  # one matrix-vector product: no kept better mask suppresses j
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def matrix_nms_decay(iou: torch.Tensor, kernel: str = "gaussian", sigma: float = 2.0,
                     chunk_bytes: int = None) -> torch.Tensor:
    """SOLOv2's Matrix NMS: ``(P, P)`` IoU of masks in score order -> ``(P,)`` decay in (0, 1].

    ``comp_i`` = max IoU of mask i with any better mask; mask j's decay is the minimum over the
    better masks i of ``f(iou_ij) / f(comp_i)``, ``f(x) = 1 - x`` ("linear") or ``exp(-sigma x^2)``
    ("gaussian"): a mask that a better one overlaps is decayed, less so when that better mask is
    itself a duplicate. Multiply the scores by it and re-rank. Columns go a chunk at a time (a
    few ``(P, c)`` temporaries within ``chunk_bytes``, default ``IOU_CHUNK_BYTES``).
    """
    if kernel not in MATRIX_NMS_KERNELS:
        raise ValueError(f"Matrix NMS kernel {kernel!r}: expected one of {MATRIX_NMS_KERNELS}")
    chunk_bytes = IOU_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    p = iou.shape[0]
    upper = torch.triu(iou, diagonal=1)  # (i, j): i better than j
    comp = upper.amax(dim=0) if p else upper.new_zeros(0)  # (P,) comp_j (column max), used as comp_i
    # No mask for i >= j is needed (as in SOLOv2's code): there iou is 0, so f(0) / f(comp_i) >= 1,
    # while i = 0 (comp_0 = 0) gives f(iou_0j) <= 1; the minimum is over the better masks alone.
    decay = torch.ones(p, device=iou.device)
    step = max(1, chunk_bytes // max(1, 4 * 2 * p))
    if kernel == "linear":
        inv = 1 / (1 - comp).clamp(min=1e-6)
    for j0 in range(0, p, step):
        u = upper[:, j0:j0 + step]  # (P, c)
        if kernel == "linear":
            decay[j0:j0 + u.shape[1]] = ((1 - u) * inv[:, None]).amin(dim=0)
        else:  # exp is monotone: min of exp(-sigma (u^2 - comp^2)) = exp(-sigma max(u^2 - comp^2))
            decay[j0:j0 + u.shape[1]] = torch.exp(-sigma * (u * u - (comp * comp)[:, None]).amax(dim=0))
    return decay.clamp(max=1)
