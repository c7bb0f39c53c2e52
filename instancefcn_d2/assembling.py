"""The instance assembling module: parameter-free, the only producer of m x m masks.

A window of ``m x m`` feature cells centred at position ``(y, x)`` is cut into a ``k x k``
grid; cell ``(u, v)`` of the window copies score map ``floor(u*k/m) * k + floor(v*k/m)`` at
feature location ``(y - m//2 + u, x - m//2 + v)``. Locations outside the map read 0 (the
logits are zero-padded, i.e. probability 0.5 before the objectness product; border windows
are rare at inference because the objectness of such positions is low, and in training the
loss sees exactly what inference produces).

All windows are gathered with one advanced-indexing op, so the cost is ``O(P * m^2)`` for
``P`` requested positions and gradients flow back to the score maps (as a scatter-add).
"""
import torch
import torch.nn.functional as F

__all__ = ["cell_index_map", "assemble", "assemble_dense", "cells_on_map"]


def cell_index_map(window_size: int, k: int, device=None) -> torch.Tensor:
    """``(m, m)`` long tensor: the score map each window cell reads, ``(u*k//m)*k + v*k//m``."""
    if not 1 <= k <= window_size:
        raise ValueError(f"Need 1 <= k <= window_size, got k={k}, window_size={window_size}")
    part = torch.arange(window_size, device=device) * k // window_size
    return part[:, None] * k + part[None, :]


def assemble(score_maps: torch.Tensor, batch_idx: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
             window_size: int) -> torch.Tensor:
    """Assemble the windows centred at the given positions.

    Args:
        score_maps: ``(N, k*k, H, W)`` instance-sensitive score maps (logits).
        batch_idx, ys, xs: ``(P,)`` long tensors: image index and feature row/column of
            each window centre.
        window_size: m, the window side in feature cells.

    Returns:
        ``(P, m, m)`` assembled mask logits.
    """
    n, kk, h, w = score_maps.shape
    k = int(round(kk ** 0.5))
    if k * k != kk:
        raise ValueError(f"score_maps must have k*k channels, got {kk}")
    m = window_size
    lo = m // 2  # cells before the centre; m - 1 - lo after it
    cells = cell_index_map(m, k, device=score_maps.device)  # (m, m)
    padded = F.pad(score_maps, (lo, m - 1 - lo, lo, m - 1 - lo))  # zeros outside the map
    offs = torch.arange(m, device=score_maps.device)
    # In padded coordinates, window row u of centre y sits at y + u.
    rows = ys.long()[:, None, None] + offs[None, :, None]  # (P, m, 1)
    cols = xs.long()[:, None, None] + offs[None, None, :]  # (P, 1, m)
    return padded[batch_idx.long()[:, None, None], cells[None], rows, cols]


def cells_on_map(ys: torch.Tensor, xs: torch.Tensor, height: int, width: int, window_size: int) -> torch.Tensor:
    """``(P, m, m)`` bool: the cells of the windows centred at ``(P,)`` rows ``ys`` and columns
    ``xs`` that lie on the ``(height, width)`` map; :func:`assemble` reads 0 for the others."""
    offs = torch.arange(window_size, device=ys.device) - window_size // 2
    rows = ys.long()[:, None] + offs  # (P, m)
    cols = xs.long()[:, None] + offs
    return (((rows >= 0) & (rows < height))[:, :, None]) & (((cols >= 0) & (cols < width))[:, None, :])


def assemble_dense(score_maps: torch.Tensor, window_size: int) -> torch.Tensor:
    """Every window of every image: ``(N, k*k, H, W)`` -> ``(N, H, W, m, m)``.

    Memory grows with ``H * W * m^2``; meant for small maps and tests. Inference assembles
    only the top-scoring positions with :func:`assemble`.
    """
    n, _, h, w = score_maps.shape
    b, y, x = torch.meshgrid(
        torch.arange(n, device=score_maps.device),
        torch.arange(h, device=score_maps.device),
        torch.arange(w, device=score_maps.device),
        indexing="ij",
    )
    out = assemble(score_maps, b.reshape(-1), y.reshape(-1), x.reshape(-1), window_size)
    return out.view(n, h, w, window_size, window_size)
