"""Ranking and mask-aware suppression (instancefcn_d2/suppression.py and NMS_TYPE / SCORE in
proposals_from_windows), each against a written-out reference: window-mask IoU against the
masks pasted into the full image and scored by pycocotools; greedy mask NMS against the greedy
loop and torchvision's NMS; Matrix NMS against SOLOv2's formula element by element."""
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from torchvision.ops import box_iou, nms

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
from detectron2.structures import Instances

from instancefcn_d2 import InstanceFCN
from instancefcn_d2.inference import proposals_from_windows
from instancefcn_d2.mask_rendering import paste_masks_binary
from instancefcn_d2.suppression import mask_nms, maskness, matrix_nms_decay, window_mask_iou

M = 21


def blob_windows(h, w, p, strides, seed=0, scale=1.0, offset=0.0):
    """``p`` windows of ``M`` cells on a feature pyramid (window origins at multiples of their
    level's stride, as targets.window_boxes places them, times ``scale``), each with an
    elliptical blob of probabilities: ``(probs (p, M, M), boxes (p, 4))``."""
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor(strides, dtype=torch.float32)[torch.randint(len(strides), (p,), generator=g)]
    jx = torch.randint(-8, max(-7, int(w / s.min()) - 10), (p,), generator=g).float()
    jy = torch.randint(-8, max(-7, int(h / s.min()) - 10), (p,), generator=g).float()
    x0, y0 = (torch.div(jx * s.min(), s, rounding_mode="floor") * s, torch.div(jy * s.min(), s, rounding_mode="floor") * s)
    boxes = torch.stack([x0, y0, x0 + M * s, y0 + M * s], dim=1) * scale + offset
    u = torch.arange(M, dtype=torch.float32) + 0.5
    c = torch.rand(p, 2, generator=g) * 10 + 5.5
    r = torch.rand(p, 2, generator=g) * 6 + 2
    d = ((u[None, :, None] - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2 + \
        ((u[None, None, :] - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2
    return torch.sigmoid(4 * (1 - d)), boxes


def blocky_full_masks(masks, boxes, h, w):
    """Reference: each window cell pasted as the block of image pixels whose centres it holds."""
    out = np.zeros((len(masks), h, w), np.uint8)
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    for i, (mask, (x0, y0, x1, y1)) in enumerate(zip(masks.numpy(), boxes.tolist())):
        for u in range(M):
            for v in range(M):
                if mask[u, v]:
                    cy0, cy1 = y0 + u * (y1 - y0) / M, y0 + (u + 1) * (y1 - y0) / M
                    cx0, cx1 = x0 + v * (x1 - x0) / M, x0 + (v + 1) * (x1 - x0) / M
                    out[i][np.ix_((ys >= cy0) & (ys < cy1), (xs >= cx0) & (xs < cx1))] = 1
    return out


def coco_iou(full):
    rles = mask_util.encode(np.asfortranarray(full.transpose(1, 2, 0)))
    return mask_util.iou(rles, rles, [0] * len(rles))


def in_image(masks, boxes, h, w):
    """Window cells that overlap the image (what the model's masks keep)."""
    u = torch.arange(M + 1, dtype=torch.float32)
    ex = boxes[:, 0:1] + u * (boxes[:, 2:3] - boxes[:, 0:1]) / M  # (P, M + 1) cell edges
    ey = boxes[:, 1:2] + u * (boxes[:, 3:4] - boxes[:, 1:2]) / M
    iny, inx = (ey[:, 1:] > 0) & (ey[:, :-1] < h), (ex[:, 1:] > 0) & (ex[:, :-1] < w)
    return masks & iny[:, :, None] & inx[:, None, :]


def test_window_mask_iou_is_exact_on_a_feature_pyramid():
    h, w = 144, 192  # multiples of the coarsest stride: no cell partly outside the image
    probs, boxes = blob_windows(h, w, 60, strides=(4, 8, 16), seed=1)
    fg = in_image(probs >= 0.5, boxes, h, w)
    ref = coco_iou(blocky_full_masks(fg, boxes, h, w))
    got = window_mask_iou(fg, boxes, (h, w), chunk_bytes=20000)  # many bands, most with a subset
    assert (ref > 0.3).sum() > 60  # overlapping pairs exist
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_window_mask_iou_on_non_nested_scales_is_close():
    # An image pyramid's scales do not nest: coarse cells are cut at the finest grid's lines.
    h, w = 160, 200
    a, ba = blob_windows(h, w, 30, strides=(8,), seed=2, scale=1.0)
    b, bb = blob_windows(h, w, 30, strides=(8,), seed=3, scale=1.37, offset=1.3)
    probs, boxes = torch.cat([a, b]), torch.cat([ba, bb])
    fg = in_image(probs >= 0.5, boxes, h, w)
    ref = coco_iou(blocky_full_masks(fg, boxes, h, w))
    got = window_mask_iou(fg, boxes, (h, w)).numpy()
    # Slivers along the image border can fall between pixel centres or between grid centres:
    # compare the masks both rasterisations see.
    seen = np.flatnonzero((ref.diagonal() > 0) & (got.diagonal() > 0))
    assert len(seen) >= 50
    got, ref = got[np.ix_(seen, seen)], ref[np.ix_(seen, seen)]
    # Each mask boundary moves by at most half a fine grid cell (4 px): blobs 16-80 px across.
    assert np.abs(got - ref).max() < 0.15 and np.abs(got - ref)[ref > 0].mean() < 0.03


def test_window_mask_iou_against_pasted_masks():
    """Against the proposals' own masks (bilinear paste, then threshold): the blocky window masks
    differ from them along the boundary only, so IoUs of blobs several cells wide agree closely."""
    h, w = 150, 190
    probs, boxes = blob_windows(h, w, 60, strides=(4, 8), seed=4)
    fg = in_image(probs >= 0.5, boxes, h, w)
    pasted = paste_masks_binary(probs * fg, boxes, (h, w))[0].numpy().astype(np.uint8)
    ref = coco_iou(pasted)
    got = window_mask_iou(fg, boxes, (h, w)).numpy()
    close = ref > 0.5  # the pairs NMS decides on
    assert close.sum() > 60
    assert np.abs(got - ref)[close].max() < 0.12 and np.abs(got - ref)[close].mean() < 0.04


def test_window_mask_iou_empty_and_disjoint():
    fg = torch.zeros(3, M, M, dtype=torch.bool)
    fg[1, 2:5, 2:5] = True
    fg[2, 2:5, 2:5] = True
    boxes = torch.tensor([[0, 0, 21, 21], [0, 0, 21, 21], [40, 0, 61, 21.]])
    iou = window_mask_iou(fg, boxes, (30, 70))
    assert torch.equal(iou, torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 1.]]))
    assert window_mask_iou(fg[:0], boxes[:0], (30, 70)).shape == (0, 0)


def greedy_reference(iou, t):
    keep = []
    for j in range(len(iou)):
        if all(iou[i, j] <= t for i in keep):
            keep.append(j)
    return keep


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7])
def test_mask_nms_is_greedy_nms(t):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(300, 2, generator=g) * 30], dim=1)
    scores = torch.rand(300, generator=g)
    order = scores.argsort(descending=True)
    iou = box_iou(boxes[order], boxes[order])
    kept = mask_nms(iou, t).nonzero().squeeze(1)
    assert kept.tolist() == greedy_reference(iou.numpy(), t)
    assert order[kept].tolist() == nms(boxes, scores, t).tolist()  # torchvision's greedy NMS on boxes


def matrix_reference(iou, kernel, sigma):
    f = (lambda x: 1 - x) if kernel == "linear" else (lambda x: math.exp(-sigma * x * x))
    n = len(iou)
    comp = [max([iou[k, i] for k in range(i)], default=0.0) for i in range(n)]
    return [min([f(iou[i, j]) / max(f(comp[i]), 1e-6) for i in range(j)] + [1.0]) for j in range(n)]


@pytest.mark.parametrize("kernel,sigma", [("linear", 2.0), ("gaussian", 2.0), ("gaussian", 0.5)])
def test_matrix_nms_decay_is_solov2s(kernel, sigma):
    probs, boxes = blob_windows(120, 150, 40, strides=(4, 8), seed=5)
    iou = window_mask_iou(probs >= 0.5, boxes, (120, 150))
    got = matrix_nms_decay(iou, kernel, sigma, chunk_bytes=4 * 4 * 40 * 7)  # 7 columns a chunk
    ref = matrix_reference(iou.double().numpy(), kernel, sigma)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert got[0] == 1 and (got <= 1).all() and (got < 0.9).any()
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms_decay(iou, "cubic")


def test_maskness_is_the_mean_foreground_probability():
    probs, _ = blob_windows(100, 100, 10, strides=(4,), seed=6)
    fg = probs >= 0.5
    ref = [float(p[f].mean()) if f.any() else 0.0 for p, f in zip(probs, fg)]
    np.testing.assert_allclose(maskness(probs, fg).numpy(), ref, rtol=1e-6)
    assert maskness(probs, torch.zeros_like(fg)).eq(0).all()


def model_windows(h=150, w=190, p=120, seed=7):
    probs, boxes = blob_windows(h, w, p, strides=(4, 8, 16), seed=seed)
    g = torch.Generator().manual_seed(seed)
    r = Instances((h, w))
    r.mask_logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4))
    r.window_boxes = boxes
    r.objectness_logits = torch.randn(p, generator=g) * 3
    r.levels = torch.randint(0, 3, (p,), generator=g)
    return r


def test_mask_nms_proposals_do_not_overlap():
    """Pasted proposals after mask NMS at t: pairwise pycocotools IoU <= t + the approximation's bound."""
    windows = model_windows()
    box = proposals_from_windows(windows, nms_type="box", nms_thresh=0.5)
    out = proposals_from_windows(windows, nms_type="mask", nms_thresh=0.5)
    assert 5 < len(out) < len(proposals_from_windows(windows, nms_thresh=1.0))
    iou = coco_iou(out.pred_masks.numpy().astype(np.uint8))
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.5 + 0.12
    assert (out.scores[1:] <= out.scores[:-1]).all()
    assert not torch.equal(out.scores, box.scores[:len(out)]) or len(out) != len(box)


def test_matrix_nms_and_maskness_scores():
    windows = model_windows()
    plain = proposals_from_windows(windows, nms_thresh=1.0, max_proposals=1000)  # objectness order
    mk = proposals_from_windows(windows, nms_thresh=1.0, score="objectness_maskness")
    probs = windows.mask_logits.sigmoid()
    fg = in_image(probs >= 0.5, windows.window_boxes, *windows.image_size)
    ref = windows.objectness_logits.double().sigmoid() * maskness(probs, fg).double()
    ref = ref[ref > 0].sort(descending=True).values
    np.testing.assert_allclose(mk.scores.numpy(), ref[:len(mk)].numpy(), rtol=1e-6)

    mat = proposals_from_windows(windows, nms_type="matrix", matrix_nms_kernel="linear")
    assert len(mat) == len(plain)  # Matrix NMS only re-ranks
    assert (mat.scores[1:] <= mat.scores[:-1]).all() and (mat.scores <= plain.scores.max()).all()
    # Decay from the reference formula on the same IoU, in objectness order.
    order = plain.objectness_logits.argsort(descending=True, stable=True)
    np.testing.assert_allclose(sorted(mat.objectness_logits.tolist()), sorted(plain.objectness_logits.tolist()))
    assert not torch.equal(mat.objectness_logits, plain.objectness_logits[order])  # re-ranked
    cut = proposals_from_windows(windows, nms_type="matrix", matrix_nms_score_thresh=0.3)
    assert len(cut) < len(mat) and (cut.scores >= 0.3).all()


@pytest.mark.parametrize("per_level_first", [False, True])
def test_box_then_matrix_keeps_the_box_set_and_reranks_it(per_level_first):
    """NMS_TYPE "box_matrix": the same proposals as box NMS; the order is SOLOv2's decay (the
    written-out formula on pycocotools IoUs of the pasted masks) times the box-NMS scores."""
    windows = model_windows(h=160, w=192, p=150, seed=9)  # sides on the coarsest grid: IoUs exact
    kw = {"nms_thresh": 0.8, "score": "objectness_maskness", "max_proposals": 60,
          "nms_per_level_first": per_level_first, "mask_format": "roi"}  # "roi": the window masks
    box = proposals_from_windows(windows, nms_type="box", **kw)
    both = proposals_from_windows(windows, nms_type="box_matrix", matrix_nms_sigma=0.5, **kw)
    key = lambda r: sorted(map(tuple, r.pred_boxes.tensor.tolist()))  # noqa: E731
    assert len(both) == len(box) == 60 and key(both) == key(box)
    h, w = windows.image_size
    wins = box.pred_mask_boxes.tensor
    blocky = blocky_full_masks(in_image(box.pred_masks[:, 0] >= 0.5, wins, h, w), wins, h, w)
    ref = box.scores.numpy() * np.array(matrix_reference(coco_iou(blocky), "gaussian", 0.5))  # box order: best first
    np.testing.assert_allclose(both.scores.numpy(), np.sort(ref)[::-1], rtol=1e-5)
    assert (both.scores[1:] <= both.scores[:-1]).all()
    assert not torch.equal(both.objectness_logits, box.objectness_logits)  # re-ranked


def test_bad_ranking_options_raise_before_work(project_cfg):
    windows = model_windows(p=5)
    with pytest.raises(ValueError, match="NMS_TYPE"):
        proposals_from_windows(windows, nms_type="soft")
    with pytest.raises(ValueError, match="SCORE"):
        proposals_from_windows(windows, score="maskness")
    with pytest.raises(ValueError, match="NMS_PER_LEVEL_FIRST"):
        proposals_from_windows(windows, nms_type="mask", nms_per_level_first=True)
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
                      ["MODEL.INSTANCEFCN.NMS_TYPE", "soft", "MODEL.WEIGHTS", ""])
    with pytest.raises(ValueError, match="NMS_TYPE"):
        InstanceFCN(cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_suppression_on_cuda_matches_cpu():
    windows = model_windows()
    probs, boxes = blob_windows(150, 190, 80, strides=(4, 8, 16), seed=8)
    fg = probs >= 0.5
    iou = window_mask_iou(fg, boxes, (150, 190))
    iou_cuda = window_mask_iou(fg.cuda(), boxes.cuda(), (150, 190), chunk_bytes=30000)
    assert iou_cuda.is_cuda
    torch.testing.assert_close(iou_cuda.cpu(), iou)
    assert torch.equal(mask_nms(iou_cuda, 0.5).cpu(), mask_nms(iou, 0.5))
    torch.testing.assert_close(matrix_nms_decay(iou_cuda).cpu(), matrix_nms_decay(iou))
    torch.testing.assert_close(maskness(probs.cuda(), fg.cuda()).cpu(), maskness(probs, fg))
    for kw in ({"nms_type": "mask", "nms_thresh": 0.5}, {"nms_type": "matrix", "score": "objectness_maskness"},
               {"nms_type": "box_matrix", "score": "objectness_maskness", "matrix_nms_sigma": 0.5}):
        cpu = proposals_from_windows(windows, **kw)
        gpu = proposals_from_windows(windows.to("cuda"), **kw)
        assert gpu.scores.is_cuda and len(gpu) == len(cpu)
        torch.testing.assert_close(gpu.scores.cpu(), cpu.scores)
