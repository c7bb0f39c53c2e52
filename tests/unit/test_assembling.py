"""Instance assembling (instancefcn_d2/assembling.py) against a naive loop written directly
from the paper's rule: cell (u, v) of the m x m window centred at (y, x) copies score map
floor(u*k/m)*k + floor(v*k/m) at (y - m//2 + u, x - m//2 + v), zero outside the map."""
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (compat shims, before any detectron2 import)
from instancefcn_d2.assembling import assemble, assemble_dense, cell_index_map

# (k, m): m divisible by k or not, k=1, even m.
KM = [(5, 21), (3, 7), (1, 5), (2, 6), (3, 3), (4, 9)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def naive_window(maps: np.ndarray, b: int, y: int, x: int, k: int, m: int) -> np.ndarray:
    """One m x m window, by the paper's rule, with plain Python loops."""
    _, _, h, w = maps.shape
    out = np.zeros((m, m), dtype=maps.dtype)
    for u in range(m):
        for v in range(m):
            c = (u * k // m) * k + (v * k // m)
            yy, xx = y - m // 2 + u, x - m // 2 + v
            if 0 <= yy < h and 0 <= xx < w:
                out[u, v] = maps[b, c, yy, xx]
    return out


def naive_dense(maps: np.ndarray, k: int, m: int) -> np.ndarray:
    n, _, h, w = maps.shape
    out = np.zeros((n, h, w, m, m), dtype=maps.dtype)
    for b in range(n):
        for y in range(h):
            for x in range(w):
                out[b, y, x] = naive_window(maps, b, y, x, k, m)
    return out


# ----------------------------------------------------------------------------- cell map
def test_cell_index_map_hand_values():
    # k=3, m=7: row parts floor(u*3/7) = [0,0,0,1,1,2,2]
    part = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    expected = part[:, None] * 3 + part[None, :]
    assert torch.equal(cell_index_map(7, 3), expected)
    # k=2, m=6 (even): halves
    part = torch.tensor([0, 0, 0, 1, 1, 1])
    assert torch.equal(cell_index_map(6, 2), part[:, None] * 2 + part[None, :])
    # k=1: a single map
    assert torch.equal(cell_index_map(5, 1), torch.zeros(5, 5, dtype=torch.long))
    # k=m: every cell its own map
    assert torch.equal(cell_index_map(4, 4), torch.arange(16).view(4, 4))


@pytest.mark.parametrize("k,m", KM)
def test_cell_index_map_matches_formula(k, m):
    cim = cell_index_map(m, k)
    assert cim.shape == (m, m) and cim.dtype == torch.long
    for u in range(m):
        for v in range(m):
            assert cim[u, v].item() == (u * k // m) * k + (v * k // m)
    # every one of the k^2 maps is used, and each cell block is contiguous
    assert sorted(set(cim.flatten().tolist())) == list(range(k * k))


@pytest.mark.parametrize("k,m", [(0, 5), (6, 5), (-1, 3)])
def test_cell_index_map_invalid_k(k, m):
    with pytest.raises(ValueError):
        cell_index_map(m, k)


def test_assemble_rejects_non_square_channel_count():
    maps = torch.zeros(1, 5, 4, 4)
    with pytest.raises(ValueError):
        assemble(maps, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                 torch.zeros(1, dtype=torch.long), 3)


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("k,m", KM)
def test_assemble_dense_matches_naive(k, m):
    g = torch.Generator().manual_seed(k * 100 + m)
    maps = torch.randn(2, k * k, 5, 6, generator=g)  # batch of 2, windows larger than the map
    out = assemble_dense(maps, m)
    assert out.shape == (2, 5, 6, m, m)
    ref = naive_dense(maps.numpy(), k, m)
    np.testing.assert_array_equal(out.numpy(), ref)


@pytest.mark.parametrize("k,m", KM)
def test_assemble_positions_match_naive(k, m):
    g = torch.Generator().manual_seed(7 + k + m)
    n, h, w = 2, 9, 11
    maps = torch.randn(n, k * k, h, w, generator=g)
    # corners, edges, interior, both images, repeated positions
    pos = [(0, 0, 0), (0, h - 1, w - 1), (1, 0, w - 1), (1, h - 1, 0), (1, 4, 5), (0, 4, 5),
           (0, 0, 5), (1, 8, 3), (1, 4, 5)]
    b = torch.tensor([p[0] for p in pos])
    ys = torch.tensor([p[1] for p in pos])
    xs = torch.tensor([p[2] for p in pos])
    out = assemble(maps, b, ys, xs, m)
    assert out.shape == (len(pos), m, m)
    for i, (bi, y, x) in enumerate(pos):
        np.testing.assert_array_equal(out[i].numpy(), naive_window(maps.numpy(), bi, y, x, k, m))


def test_assemble_zero_outside_and_identity_at_centre():
    # k=1: the window is a zero-padded crop of the single map; the centre cell reads (y, x).
    maps = torch.arange(1, 13, dtype=torch.float32).view(1, 1, 3, 4)
    out = assemble(maps, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 5)[0]
    expected = torch.zeros(5, 5)
    expected[2:5, 2:5] = maps[0, 0, :3, :3]
    assert torch.equal(out, expected)
    dense = assemble_dense(maps, 3)
    assert torch.equal(dense[0, :, :, 1, 1], maps[0, 0])


def test_assemble_picks_the_right_map_per_cell():
    # Constant maps c -> value c: the assembled window of an interior position is cell_index_map.
    k, m = 3, 7
    maps = torch.arange(k * k, dtype=torch.float32).view(1, k * k, 1, 1).expand(1, k * k, 9, 9).contiguous()
    out = assemble(maps, torch.tensor([0]), torch.tensor([4]), torch.tensor([4]), m)[0]
    assert torch.equal(out, cell_index_map(m, k).float())


def test_assemble_empty_positions():
    maps = torch.randn(1, 4, 5, 5)
    e = torch.zeros(0, dtype=torch.long)
    out = assemble(maps, e, e, e, 6)
    assert out.shape == (0, 6, 6)


# ----------------------------------------------------------------------------- backward
def test_gradcheck_dense_double():
    maps = torch.randn(1, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: assemble_dense(s, 3), (maps,), eps=1e-6, atol=1e-5)


def test_gradcheck_positions_double():
    maps = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0, 1, 1, 0])
    ys = torch.tensor([0, 2, 1, 0])
    xs = torch.tensor([1, 2, 1, 1])  # includes a repeated position
    assert torch.autograd.gradcheck(lambda s: assemble(s, b, ys, xs, 5), (maps,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("k,m", [(5, 21), (2, 6), (3, 7)])
def test_gradient_is_naive_scatter(k, m):
    g = torch.Generator().manual_seed(3)
    n, h, w = 2, 6, 7
    maps = torch.randn(n, k * k, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0, 0, 1, 1, 1, 0])
    ys = torch.tensor([0, 3, 5, 2, 2, 3])
    xs = torch.tensor([0, 3, 6, 1, 1, 4])
    out = assemble(maps, b, ys, xs, m)
    up = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, maps, up)

    ref = np.zeros((n, k * k, h, w))
    upn = up.numpy()
    for i in range(len(b)):
        for u in range(m):
            for v in range(m):
                c = (u * k // m) * k + (v * k // m)
                yy, xx = int(ys[i]) - m // 2 + u, int(xs[i]) - m // 2 + v
                if 0 <= yy < h and 0 <= xx < w:
                    ref[int(b[i]), c, yy, xx] += upn[i, u, v]
    np.testing.assert_allclose(grad.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert np.count_nonzero(ref) > 0 and np.count_nonzero(ref) < ref.size  # some pixels unread: zero grad
