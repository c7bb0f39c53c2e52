"""Training targets (instancefcn_d2/targets.py) on hand-built scenes: which windows are
positive / negative / ignored, what each positive window's m x m mask target is, and the
per-image window sampling."""
import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (compat shims, before any detectron2 import)
from detectron2.structures import BitMasks, PolygonMasks

from instancefcn_d2.targets import WindowLabeler, inside_windows, mask_targets, sample_windows, window_boxes

STRIDE, M = 8, 21
S = STRIDE * M  # window side in pixels: 168
CANON = 128.0 / 224.0 * S  # canonical object size: 96 px
# positive centre offset 12 px, negative 24 px; positive scale 2^+-1/4, negative 2^+-1
LABELER_KW = dict(canonical_ratio=128.0 / 224.0, pos_center_offset=16.0 / 224.0,
                  neg_center_offset=32.0 / 224.0, pos_scale_log2=0.25, neg_scale_log2=1.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def labeler():
    return WindowLabeler(**LABELER_KW)


def centre_px(cell: int) -> float:
    """Pixel centre of the window centred on feature cell ``cell`` (odd m)."""
    return cell * STRIDE + STRIDE / 2


def square(cx, cy, side):
    h = side / 2
    return [cx - h, cy - h, cx + h, cy + h]


def rect_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def label_scene(boxes, fh=20, fw=20, image_size=(160, 160), crowd=None):
    windows = window_boxes(fh, fw, STRIDE, M)
    gt = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    cr = torch.tensor(crowd if crowd else [], dtype=torch.float32).view(-1, 4)
    labels, matched = labeler()(windows, gt, cr, inside_windows(fh, fw, image_size, STRIDE))
    return windows, labels.view(fh, fw), matched.view(fh, fw)


# ----------------------------------------------------------------------------- windows
def test_window_boxes_geometry():
    fh, fw, m = 3, 4, 5
    boxes = window_boxes(fh, fw, STRIDE, m)
    assert boxes.shape == (fh * fw, 4)
    for y in range(fh):
        for x in range(fw):
            x0, y0 = (x - m // 2) * STRIDE, (y - m // 2) * STRIDE
            assert boxes[y * fw + x].tolist() == [x0, y0, x0 + m * STRIDE, y0 + m * STRIDE]
    # odd m: window centre == centre of its feature cell
    b = window_boxes(20, 20, STRIDE, M)[10 * 20 + 7]
    assert ((b[0] + b[2]) / 2).item() == centre_px(7) and ((b[1] + b[3]) / 2).item() == centre_px(10)


def test_labeler_rejects_inconsistent_thresholds():
    with pytest.raises(ValueError):
        WindowLabeler(**dict(LABELER_KW, pos_center_offset=0.3, neg_center_offset=0.1))
    with pytest.raises(ValueError):
        WindowLabeler(**dict(LABELER_KW, pos_scale_log2=1.5, neg_scale_log2=1.0))


# ----------------------------------------------------------------------------- labels
def test_centred_canonical_object_is_positive_with_exact_rectangle_target():
    # Cell-aligned rectangle [40, 128) centred at pixel 84 = centre of window (10, 10);
    # side 88 px: log2(88 / 96) = -0.13, within 2^(+-1/4).
    box = [40.0, 40.0, 128.0, 128.0]
    windows, labels, matched = label_scene([box])
    assert labels[10, 10] == 1 and matched[10, 10] == 0
    # window (10,10) covers pixels [0, 168): the object is cells [5, 16) on both axes
    expected = torch.zeros(M, M)
    expected[5:16, 5:16] = 1
    idx = torch.tensor([10 * 20 + 10])
    for masks in (PolygonMasks([rect_poly(*box)]),
                  BitMasks(_bitmask_rect(160, 160, 40, 40, 128, 128))):
        t = mask_targets(masks, torch.tensor([0]), windows[idx], M)
        assert t.shape == (1, M, M) and t.dtype == torch.float32
        assert torch.equal(t[0], expected)


def _bitmask_rect(h, w, x0, y0, x1, y1):
    bm = torch.zeros(1, h, w, dtype=torch.bool)
    bm[0, int(y0):int(y1), int(x0):int(x1)] = True
    return bm


def test_centred_polygon_target_matches_independent_rasterisation():
    # 32-gon of radius 48 centred on window (9, 11): box side exactly 96 (canonical).
    cx, cy = centre_px(11), centre_px(9)
    ang = np.arange(32) * 2 * np.pi / 32
    pts = np.stack([cx + 48 * np.cos(ang), cy + 48 * np.sin(ang)], 1)
    masks = PolygonMasks([[pts.reshape(-1).tolist()]])
    gt_box = masks.get_bounding_boxes().tensor[0].tolist()
    np.testing.assert_allclose(gt_box, [cx - 48, cy - 48, cx + 48, cy + 48], atol=1e-4)
    windows, labels, matched = label_scene([gt_box])
    assert labels[9, 11] == 1 and matched[9, 11] == 0
    win = windows[9 * 20 + 11]

    # Independent reference: rasterise at 16 samples per window cell with OpenCV, then
    # average each cell's block -> coverage fraction.
    f = 16
    fine = np.zeros((M * f, M * f), np.uint8)
    rel = (pts - win[:2].numpy()) * (M * f / S)
    cv2.fillPoly(fine, [np.round(rel * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    cover = fine.reshape(M, f, M, f).mean(axis=(1, 3))

    for masks_ in (masks, _bitmasks_from_poly(pts, 160, 160)):
        t = mask_targets(masks_, torch.tensor([0]), win[None], M)[0].numpy()
        assert set(np.unique(t)) <= {0.0, 1.0}
        assert (t[cover >= 0.7] == 1).all()
        assert (t[cover <= 0.3] == 0).all()
        # disagreements only on boundary cells
        boundary = (cover > 0.05) & (cover < 0.95)
        assert ((t != (cover >= 0.5)) & ~boundary).sum() == 0
        assert cover.sum() > 100  # a real object (~ pi * 6^2 cells)


def _bitmasks_from_poly(pts, h, w):
    img = np.zeros((h, w), np.uint8)
    cv2.fillPoly(img, [np.round((pts - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return BitMasks(torch.from_numpy(img.astype(bool))[None])


def test_off_centre_object_is_negative():
    # centre 30 px right of window (10,10)'s centre: 30 > 24 px negative threshold
    box = square(centre_px(10) + 30, centre_px(10), CANON)
    _, labels, _ = label_scene([box])
    assert labels[10, 10] == 0
    # and the window actually centred on it (30 px = 3.75 cells; nearest cell is 14: 2 px off)
    assert labels[10, 14] == 1


@pytest.mark.parametrize("dx,dy", [(16, 0), (0, -16), (-14, 14)])
def test_slightly_off_centre_object_is_ignored(dx, dy):
    # 12 px < offset <= 24 px on the worst axis
    box = square(centre_px(10) + dx, centre_px(10) + dy, CANON)
    _, labels, _ = label_scene([box])
    assert labels[10, 10] == -1


def test_within_positive_offset_is_positive():
    box = square(centre_px(10) + 10, centre_px(10) - 10, CANON)  # 10 px <= 12 px on both axes
    _, labels, matched = label_scene([box])
    assert labels[10, 10] == 1 and matched[10, 10] == 0


@pytest.mark.parametrize("factor,expected", [
    (2.2, 0), (1 / 2.2, 0),  # off-scale beyond 2^+-1: negative
    (1.5, -1), (1 / 1.5, -1),  # 2^+-0.58: between the thresholds, ignored
    (1.15, 1), (1 / 1.15, 1),  # within 2^+-1/4: positive
])
def test_scale_rule(factor, expected):
    box = square(centre_px(10), centre_px(10), CANON * factor)
    _, labels, _ = label_scene([box])
    assert labels[10, 10] == expected


def test_two_touching_objects_each_window_targets_only_its_own_mask():
    # A = [40,128) x [40,128), B = [128,216) x [40,128): they share the edge x = 128.
    # A is centred on window (10,10) (pixel 84), B on window (10,21) (pixel 172).
    fh, fw, size = 20, 28, (160, 224)
    a, b = [40.0, 40.0, 128.0, 128.0], [128.0, 40.0, 216.0, 128.0]
    windows, labels, matched = label_scene([a, b], fh, fw, size)
    assert labels[10, 10] == 1 and matched[10, 10] == 0
    assert labels[10, 21] == 1 and matched[10, 21] == 1
    idx = torch.tensor([10 * fw + 10, 10 * fw + 21])
    bm = torch.cat([_bitmask_rect(160, 224, *a), _bitmask_rect(160, 224, *b)])
    for masks in (PolygonMasks([rect_poly(*a), rect_poly(*b)]), BitMasks(bm)):
        t = mask_targets(masks, torch.stack([matched[10, 10], matched[10, 21]]), windows[idx], M)
        # window (10,10) covers x in [0,168): A is cells 5..15; B's pixels (cells 16..20) are 0
        ea = torch.zeros(M, M)
        ea[5:16, 5:16] = 1
        assert torch.equal(t[0], ea)
        assert t[0][5:16, 16:].sum() == 0
        # window (10,21) covers x in [88,256): B is cells 5..15; A's pixels (cells 0..4) are 0
        eb = torch.zeros(M, M)
        eb[5:16, 5:16] = 1
        assert torch.equal(t[1], eb)
        assert t[1][5:16, :5].sum() == 0


def test_closest_object_wins_among_qualifying():
    # two canonical objects both within the positive offset of window (10,10); the closer wins
    far = square(centre_px(10) + 10, centre_px(10), CANON)
    near = square(centre_px(10) + 3, centre_px(10), CANON)
    _, labels, matched = label_scene([far, near])
    assert labels[10, 10] == 1 and matched[10, 10] == 1


def test_crowd_region_is_ignored_never_positive():
    # Window centres are at 8 i + 4 px (STRIDE 8): 44, 52, ..., 124 lie in [40, 128], i.e.
    # cells 5..15 on both axes; the rest of the image is a clean negative.
    _, labels, _ = label_scene([], crowd=[[40.0, 40.0, 128.0, 128.0]])
    expected = torch.zeros(20, 20, dtype=labels.dtype)
    expected[5:16, 5:16] = -1
    assert torch.equal(labels, expected)

    # Edges: a centre on the crowd's border is inside (x 44 -> cell 5, y 60 -> cell 7); 123.9
    # stops before the centre 124 (cell 15), 36 starts at cell 4. Two crowds: either one counts.
    _, labels, _ = label_scene([], crowd=[[44.0, 36.0, 123.9, 60.0], [0.0, 156.0, 4.0, 160.0]])
    expected = torch.zeros(20, 20, dtype=labels.dtype)
    expected[4:8, 5:15] = -1
    expected[19, 0] = -1  # centre (4, 156)
    assert torch.equal(labels, expected)


def test_crowd_shaped_like_a_canonical_object_is_not_positive():
    # A crowd with the exact geometry of a positive object must not create a positive.
    box = [40.0, 40.0, 128.0, 128.0]
    _, labels, _ = label_scene([], crowd=[box])
    assert labels[10, 10] == -1


def test_no_instances_inside_negative_padding_ignored():
    # 20x20 feature map (160 px) over an image of 100 x 130 valid pixels
    windows, labels, matched = label_scene([], image_size=(100, 130))
    for y in range(20):
        for x in range(20):
            inside = centre_px(x) < 130 and centre_px(y) < 100
            assert labels[y, x] == (0 if inside else -1), (y, x)
    assert (matched == 0).all()
    assert (labels[:12, :16] == 0).all() and (labels[12:] == -1).all() and (labels[:, 16:] == -1).all()


def test_positive_window_at_border_target_crops_outside_as_background():
    # object at the image corner, centred on window (2, 2) (pixel 20): cells outside the image
    box = [0.0, 0.0, 40.0, 40.0]
    windows, _, _ = label_scene([box])
    win = windows[2 * 20 + 2][None]  # covers pixels [-64, 104)
    expected = torch.zeros(M, M)
    expected[8:13, 8:13] = 1  # pixels [0, 40) -> cells 8..12
    for masks in (PolygonMasks([rect_poly(*box)]), BitMasks(_bitmask_rect(160, 160, *box))):
        t = mask_targets(masks, torch.tensor([0]), win, M)[0]
        assert torch.equal(t, expected)


def test_mask_targets_empty():
    t = mask_targets(PolygonMasks([rect_poly(0, 0, 8, 8)]), torch.zeros(0, dtype=torch.long),
                     torch.zeros(0, 4), M)
    assert t.shape == (0, M, M)


# ----------------------------------------------------------------------------- sampling
def test_sample_windows_balanced_when_plenty():
    labels = torch.full((2000,), -1, dtype=torch.int8)
    labels[:600] = 1
    labels[600:1500] = 0
    pos, neg = sample_windows(labels, 256, 0.5)
    assert pos.numel() == 128 and neg.numel() == 128
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert pos.unique().numel() == pos.numel() and neg.unique().numel() == neg.numel()


def test_sample_windows_fills_with_negatives():
    labels = torch.full((1000,), -1, dtype=torch.int8)
    labels[:10] = 1
    labels[100:900] = 0
    pos, neg = sample_windows(labels, 256, 0.5)
    assert pos.numel() == 10 and neg.numel() == 246
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_sample_windows_few_labelled():
    labels = torch.full((100,), -1, dtype=torch.int8)
    labels[:5] = 1
    labels[50:70] = 0
    pos, neg = sample_windows(labels, 256, 0.5)
    assert pos.numel() == 5 and neg.numel() == 20
    assert pos.numel() + neg.numel() <= 256


def test_sample_windows_all_ignored_is_empty():
    pos, neg = sample_windows(torch.full((400,), -1, dtype=torch.int8), 256, 0.5)
    assert pos.numel() == 0 and neg.numel() == 0


def test_sample_windows_from_labeler_output():
    windows, labels, _ = label_scene([[40.0, 40.0, 128.0, 128.0]])
    flat = labels.view(-1)
    pos, neg = sample_windows(flat, 256, 0.5)
    assert 1 <= pos.numel() <= 128 and pos.numel() + neg.numel() <= 256
    assert (flat[pos] == 1).all() and (flat[neg] == 0).all()


def test_bitmask_targets_equal_detectron2_crop_and_resize_on_two_levels():
    # Reference: detectron2's BitMasks.crop_and_resize (ROIAlign over the whole masks) on masks
    # zero-padded beyond every window, so that outside the image is background for it too
    # (on the unpadded mask ROIAlign would replicate the border pixels one pixel out). Ours
    # gathers each window's pixels instead; both must agree exactly, for windows of two levels
    # (strides 4 and 8), partly off the image, and several objects.
    g = torch.Generator().manual_seed(3)
    h, w = 70, 90
    masks = torch.rand(4, h, w, generator=g) > 0.6
    masks[1, 10:50, 20:60] = True
    windows = torch.cat([window_boxes(18, 23, 4, M), window_boxes(9, 12, 8, M)])
    idx = torch.randperm(len(windows), generator=g)[:60]
    matched = torch.randint(0, 4, (60,), generator=g)
    ours = mask_targets(BitMasks(masks), matched, windows[idx], M)
    pad = 200
    padded = torch.nn.functional.pad(masks[matched], (pad, pad, pad, pad))
    ref = BitMasks(padded).crop_and_resize(windows[idx] + pad, M).float()
    assert torch.equal(ours, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bitmask_and_polygon_targets_on_cuda_windows():
    masks = _bitmask_rect(160, 160, 40, 40, 128, 128)
    windows = window_boxes(20, 20, STRIDE, M)[torch.tensor([10 * 20 + 10])].cuda()
    for gt in (BitMasks(masks), PolygonMasks([rect_poly(40, 40, 128, 128)])):
        t = mask_targets(gt, torch.tensor([0], device="cuda"), windows, M)
        assert t.device.type == "cuda" and t[0, 5:16, 5:16].all() and t.sum() == 11 * 11
