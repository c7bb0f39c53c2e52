"""inference.paste_masks_binary against detectron2's paste_masks_in_image (the reference: one
bilinear grid_sample per mask), on masks of varied sizes and fractional boxes, for one chunk per
mask, several mixed-size chunks, and the default budget."""
import pytest
import torch

import instancefcn_d2  # noqa: F401  (compat shims before detectron2.layers)
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.structures import Boxes

from instancefcn_d2.inference import PASTE_CHUNK_BYTES, paste_masks_binary

H, W, M = 61, 83, 7


def scene(n=40, seed=0):
    """``(n, M, M)`` smooth mask probabilities and ``(n, 4)`` fractional boxes of widely varied
    sizes: sub-pixel, ordinary, larger than the image, partly and entirely outside it."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, M, M, generator=g)
    masks[: n // 4] = 1.0  # solid masks: tight box = pasted box (+- the bilinear edge)
    # Sparse masks, as most proposals are: a few foreground cells in a faint window; the paste
    # shrinks their region to those cells +- one cell (it must not change the result).
    sparse = slice(n // 4, n // 2)
    masks[sparse] *= 0.25
    k = masks[sparse].shape[0]
    r, c = torch.randint(0, M, (k,), generator=g), torch.randint(0, M - 1, (k,), generator=g)
    masks[sparse][torch.arange(k), r, c] = 0.95
    masks[sparse][torch.arange(k), r, c + 1] = 0.6
    cx, cy = torch.rand(n, generator=g) * W * 1.2 - 0.1 * W, torch.rand(n, generator=g) * H * 1.2 - 0.1 * H
    side = torch.exp(torch.rand(n, generator=g) * 5.0 - 1.0)  # 0.37 .. 55 px
    aspect = torch.exp(torch.rand(n, generator=g) - 0.5)
    boxes = torch.stack([cx - side * aspect, cy - side / aspect, cx + side * aspect, cy + side / aspect], 1)
    boxes[-1] = torch.tensor([W + 5.3, 2.2, W + 20.7, 30.1])  # entirely right of the image
    boxes[-2] = torch.tensor([-40.6, -30.2, W + 33.9, H + 21.4])  # covers the whole image
    assert (boxes != boxes.round()).any(dim=1).sum() >= n - 2  # fractional
    return masks, boxes


def reference(masks, boxes, threshold):
    # detectron2 cannot take a box whose +-1 px region lies wholly outside the image (empty
    # arange): such a mask is empty by definition.
    outside = (boxes[:, 0].floor() - 1 >= W) | (boxes[:, 1].floor() - 1 >= H)
    outside |= (boxes[:, 2] <= -1) | (boxes[:, 3] <= -1)
    out = torch.zeros(len(masks), H, W, dtype=torch.bool)
    inside = (~outside).nonzero().squeeze(1)
    out[inside] = paste_masks_in_image(masks[inside], Boxes(boxes[inside]), (H, W), threshold=threshold)
    return out


@pytest.mark.parametrize("threshold", [0.5, 0.3])
@pytest.mark.parametrize("chunk_bytes", [1, 6000, PASTE_CHUNK_BYTES], ids=["per_mask", "several", "default"])
def test_same_masks_as_detectron2(threshold, chunk_bytes):
    masks, boxes = scene()
    out, tight, nonempty = paste_masks_binary(masks, boxes, (H, W), threshold=threshold, chunk_bytes=chunk_bytes)
    ref = reference(masks, boxes, threshold)
    assert out.dtype == torch.bool and out.shape == ref.shape == (len(masks), H, W)
    # Equal except where the interpolated value lies within float rounding of the threshold
    # (the two compute the same bilinear weights in a different order).
    ambiguous = reference(masks, boxes, threshold - 1e-4) != reference(masks, boxes, threshold + 1e-4)
    differ = out != ref
    assert not (differ & ~ambiguous).any(), (differ & ~ambiguous).nonzero()[:5]
    assert differ.sum() <= 3
    assert ref.any(dim=(1, 2)).sum() >= 25 and not ref[-1].any()  # a meaningful scene

    # Tight boxes (exclusive right/bottom) and nonempty, from the pasted masks by a plain loop.
    for i in range(len(masks)):
        ys, xs = out[i].nonzero(as_tuple=True)
        assert bool(nonempty[i]) == (len(ys) > 0)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(ys) else [0, 0, 0, 0]
        assert tight[i].tolist() == [float(v) for v in expected], i


def test_result_does_not_depend_on_the_chunk_budget():
    masks, boxes = scene(n=60, seed=1)
    results = [paste_masks_binary(masks, boxes, (H, W), chunk_bytes=b) for b in (1, 3000, 20000, PASTE_CHUNK_BYTES)]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_threshold_zero_keeps_each_mask_inside_its_own_region():
    """At threshold 0 every pixel of a mask's region passes; within a chunk, the canvas padding
    beyond a smaller mask's region must not."""
    masks, boxes = scene(n=12, seed=2)
    out, _, _ = paste_masks_binary(masks, boxes, (H, W), threshold=0.0, chunk_bytes=PASTE_CHUNK_BYTES)
    assert torch.equal(out, reference(masks, boxes, 0.0))


def test_no_masks():
    out, tight, nonempty = paste_masks_binary(torch.zeros(0, M, M), torch.zeros(0, 4), (H, W))
    assert out.shape == (0, H, W) and tight.shape == (0, 4) and nonempty.shape == (0,)
