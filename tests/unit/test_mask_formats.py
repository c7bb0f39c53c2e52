"""MODEL.INSTANCEFCN.MASK_FORMAT: "bitmask", "rle" and "roi" give the same proposals (boxes,
scores, masks) and the same AR; RLEs equal pycocotools' own encoding of the dense masks; a
4000 x 3000 inference in "rle" allocates nothing near one full-image mask per proposal; every
format's proposal pickle loads with detectron2; NMS over prefixes equals plain NMS."""
import json
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog, load_proposals_into_dataset
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import BoxMode, Instances
from torch.profiler import ProfilerActivity, profile
from torchvision.ops import box_iou, nms

from instancefcn_d2 import InstanceFCN
from instancefcn_d2.evaluation import SegmentProposalEvaluator, instances_to_proposal_record, write_proposal_pickle
from instancefcn_d2.heads import InstanceBranch, ObjectnessBranch
from instancefcn_d2.inference import nms_first, nms_groups_first, proposals_from_windows
from instancefcn_d2.mask_rendering import (
    MASK_FORMATS,
    PASTE_CHUNK_BYTES,
    RLEMasks,
    paste_masks_binary,
    paste_masks_rle,
    proposal_bitmasks,
    proposal_rles,
)
from instancefcn_d2.targets import WindowLabeler
from instancefcn_d2.visualize import draw_proposals

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
M = 7


def random_windows(h, w, p=200, seed=0, objects=()):
    """``Instances`` as ``InstanceFCN.select_windows`` gives: random logits, window boxes (some
    hanging off the image), objectness; windows around each ``objects`` box hold that object."""
    g = torch.Generator().manual_seed(seed)
    size = torch.rand(p, 1, generator=g) * 0.6 * min(h, w) + 8
    x0 = torch.rand(p, 1, generator=g) * (w + size[:, 0:1]) - size[:, 0:1] * 0.6
    y0 = torch.rand(p, 1, generator=g) * (h + size[:, 0:1]) - size[:, 0:1] * 0.6
    boxes = torch.cat([x0, y0, x0 + size, y0 + size], dim=1)
    logits = torch.randn(p, M, M, generator=g) * 3
    for i, (a, b, c, d) in enumerate(objects):  # a window 1.5 x the object, object cells +6
        for j in range(i * 5, i * 5 + 5):
            cx, cy, s = (a + c) / 2 + j % 3, (b + d) / 2 - j % 2, 1.5 * max(c - a, d - b)
            boxes[j] = torch.tensor([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
            lo, hi = round(M / 6), M - round(M / 6)
            logits[j] = -6.0
            logits[j, lo:hi, lo:hi] = 6.0
    r = Instances((h, w))
    r.mask_logits = logits
    r.window_boxes = boxes
    r.objectness_logits = torch.randn(p, generator=g) * 4
    r.levels = torch.randint(0, 3, (p,), generator=g)
    return r


def render_all(windows, **kw):
    return {f: proposals_from_windows(windows, mask_format=f, **kw) for f in MASK_FORMATS}


@pytest.mark.parametrize("hw,threshold", [((61, 83), 0.5), ((97, 40), 0.3), ((50, 50), 0.0)])
def test_formats_give_the_same_proposals(hw, threshold):
    out = render_all(random_windows(*hw, p=150, seed=hw[0]), mask_threshold=threshold, max_proposals=60)
    bit, rle, roi = out["bitmask"], out["rle"], out["roi"]
    assert len(bit) > 10
    assert bit.pred_masks.shape == (len(bit), *hw) and bit.pred_masks.dtype == torch.bool
    assert isinstance(rle.pred_masks_rle, RLEMasks) and not rle.has("pred_masks")
    assert roi.pred_masks.shape == (len(bit), 1, M, M) and roi.pred_mask_boxes.tensor.shape == (len(bit), 4)
    for other in (rle, roi):
        assert torch.equal(other.pred_boxes.tensor, bit.pred_boxes.tensor)  # tight boxes identical
        assert torch.equal(other.scores, bit.scores) and torch.equal(other.levels, bit.levels)
        assert torch.equal(proposal_bitmasks(other, threshold), bit.pred_masks)
    # The RLEs are pycocotools' own encoding of the dense masks, string for string.
    assert proposal_rles(rle) == proposal_rles(bit) == proposal_rles(roi, threshold)
    dense = np.asfortranarray(bit.pred_masks.permute(1, 2, 0).numpy().astype(np.uint8))
    assert [r["counts"] for r in rle.pred_masks_rle] == [r["counts"].decode() for r in mask_util.encode(dense)]


def test_rle_runs_at_image_borders_match_pycocotools():
    """Masks touching the first / last rows, columns and pixels, whole columns, the whole image:
    where column-major runs continue from one column into the next."""
    h, w = 23, 17
    boxes = torch.tensor([[-4.0, -4.0, w + 4.0, h + 4.0],  # covers the image: full mask
                          [-2.0, -2.0, 8.0, h + 3.0],  # full-height columns at the left
                          [9.0, -3.0, w + 3.0, h + 3.0],  # full-height columns up to the last pixel
                          [-1.0, 5.0, 6.0, 12.0],  # first column only partly
                          [w - 6.0, h - 6.0, w + 1.0, h + 1.0],  # reaches the last pixel
                          [3.0, 3.0, 9.0, 9.0],  # interior
                          [40.0, 40.0, 50.0, 50.0]])  # off the image: empty
    probs = torch.ones(len(boxes), M, M)
    probs[5, 2:5, 2:5] = 0.0  # a hole: several runs per column
    masks, tight, nonempty = paste_masks_binary(probs, boxes, (h, w))
    rles, tight_r, nonempty_r = paste_masks_rle(probs, boxes, (h, w))
    assert masks[0].all() and masks[1][:, 0].all() and masks[4][-1, -1] and not masks[6].any()
    dense = np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))
    assert [r["counts"] for r in rles] == [r["counts"].decode() for r in mask_util.encode(dense)]
    np.testing.assert_array_equal(mask_util.decode(list(rles)), dense)  # round trip
    assert torch.equal(tight_r, tight) and torch.equal(nonempty_r, nonempty)


# ------------------------------------------------------------------------ evaluator and exports
GT = [(10, 12, 40, 50), (50, 8, 85, 30), (60, 40, 95, 75)]


@pytest.fixture(scope="module")
def dataset():
    name = "mask_formats_toy"
    h, w = 80, 100
    records = []
    for image_id in range(3):
        anns = []
        for k, (a, b, c, d) in enumerate(GT[image_id:] + GT[:image_id][:1]):
            m = np.zeros((h, w), np.uint8, order="F")
            m[b:d, a:c] = 1
            rle = mask_util.encode(m)
            rle["counts"] = rle["counts"].decode()
            anns.append({"bbox": [a, b, c, d], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": rle,
                         "category_id": 0, "iscrowd": 0})
        records.append({"image_id": image_id, "height": h, "width": w, "file_name": f"{image_id}.png",
                        "annotations": anns})
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    yield name, records
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_evaluator_and_exports_identical_for_every_format(dataset, tmp_path):
    name, records = dataset
    results, files = {}, {}
    for fmt in MASK_FORMATS:
        out_dir = tmp_path / fmt
        ev = SegmentProposalEvaluator(name, output_dir=str(out_dir), distributed=False, max_dets=(1, 10, 100),
                                      mask_threshold=0.4)  # the model's: ROI masks are pasted at it
        ev.reset()
        for r in records:
            windows = random_windows(r["height"], r["width"], p=120, seed=r["image_id"],
                                     objects=[a["bbox"] for a in r["annotations"]])
            inst = proposals_from_windows(windows, mask_format=fmt, max_proposals=100, mask_threshold=0.4)
            ev.process([{"image_id": r["image_id"]}], [{"instances": inst}])
        results[fmt] = ev.evaluate()
        files[fmt] = ((out_dir / "segment_proposals_coco.json").read_text(),
                      (out_dir / "box_proposals.pkl").read_bytes())
        # detectron2 reads the pickle back into the dataset dicts.
        loaded = load_proposals_into_dataset([dict(r) for r in records], str(out_dir / "box_proposals.pkl"))
        assert all(len(d["proposal_boxes"]) > 0 for d in loaded)
    assert results["bitmask"]["segm_proposals"]["AR@100"] > 30  # the objects were found
    assert results["rle"] == results["bitmask"] == results["roi"]
    assert files["rle"] == files["bitmask"] == files["roi"]
    assert len(json.loads(files["rle"][0])) > 0


@pytest.mark.parametrize("ranking", [{}, {"score": "objectness_maskness", "nms_type": "box_matrix"}])
def test_proposal_pickle_of_each_format_loads_with_detectron2(tmp_path, ranking):
    """detectron2's loader re-sorts by the pickle's logits: it must give back the proposals in
    their ranking (here also when maskness and Matrix NMS reorder them against the objectness)."""
    windows = random_windows(60, 70, p=80, seed=7)
    record = {"image_id": 5, "height": 60, "width": 70}
    boxes = {}
    for fmt in MASK_FORMATS:
        inst = proposals_from_windows(windows, mask_format=fmt, max_proposals=30, **ranking)
        if ranking:
            assert not (inst.objectness_logits[1:] <= inst.objectness_logits[:-1]).all()  # reordered
        write_proposal_pickle([instances_to_proposal_record(inst, 5)], str(tmp_path / f"{fmt}.pkl"))
        (d,) = load_proposals_into_dataset([dict(record)], str(tmp_path / f"{fmt}.pkl"))
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
        boxes[fmt] = d["proposal_boxes"]
        np.testing.assert_allclose(boxes[fmt], inst.pred_boxes.tensor.numpy())
    np.testing.assert_array_equal(boxes["rle"], boxes["bitmask"])
    np.testing.assert_array_equal(boxes["roi"], boxes["bitmask"])


# ------------------------------------------------------------------------------ pictures
def test_pictures_same_in_every_format_and_small_images_enlarged():
    h, w = 184, 225  # a quick-start-sized image
    image = np.full((h, w, 3), 90, np.uint8)
    pictures = {}
    for fmt, inst in render_all(random_windows(h, w, p=60, seed=2), max_proposals=20).items():
        pictures[fmt] = draw_proposals(image, inst, top_n=8)
    s = 512 / h
    assert pictures["bitmask"].shape == (512, round(w * s), 3)
    np.testing.assert_array_equal(pictures["rle"], pictures["bitmask"])
    np.testing.assert_array_equal(pictures["roi"], pictures["bitmask"])
    assert draw_proposals(np.zeros((600, 700, 3), np.uint8), Instances((600, 700), scores=torch.zeros(0))).shape == (600, 700, 3)


# ------------------------------------------------------------------------------ memory bound
class _Backbone(Backbone):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)

    def forward(self, x):
        return {"conv5": F.relu(self.conv(F.avg_pool2d(x, 8)))}

    def output_shape(self):
        return {"conv5": ShapeSpec(channels=8, stride=8)}


def _tiny_model(**kw):
    torch.manual_seed(0)
    return InstanceFCN(
        backbone=_Backbone(), instance_branch=InstanceBranch(in_channels=8, k=3, channels=16),
        objectness_branch=ObjectnessBranch(in_channels=8, channels=16),
        labeler=WindowLabeler(canonical_ratio=40 / 56, pos_center_offset=4 / 56, neg_center_offset=8 / 56,
                              pos_scale_log2=0.25, neg_scale_log2=1.0),
        pixel_mean=[100.0, 110.0, 120.0], pixel_std=[50.0, 50.0, 50.0], window_size=M, **kw).eval()


def test_rle_inference_at_4000x3000_stays_within_its_chunk_budget():
    """300 proposals on a 4000 x 3000 output frame: in "bitmask" format the masks alone would
    be 300 x 12 MB = 3.6 GB; in "rle" no tensor may exceed one paste chunk, and Python/numpy
    (pycocotools' RLEs included) stay under a few MB."""
    h, w, n = 3000, 4000, 300
    model = _tiny_model(test_scales=(300,), test_max_size=400, topk_per_scale=1000,
                        detections_per_image=n, mask_format="rle", mask_threshold=0.3)
    g = torch.Generator().manual_seed(0)
    inputs = [{"image": torch.randint(0, 256, (3, 300, 400), generator=g, dtype=torch.uint8),
               "height": h, "width": w}]
    tracemalloc.start()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            (out,) = model(inputs)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    inst = out["instances"]
    assert len(inst) == n and inst.image_size == (h, w)
    biggest = max(e.self_cpu_memory_usage for e in prof.events())
    dense = n * h * w  # bytes of (N, H, W) bool masks
    print(f"largest op allocation {biggest / 2**20:.1f} MiB, python peak {python_peak / 2**20:.1f} MiB, "
          f"dense masks would be {dense / 2**30:.2f} GiB")
    assert biggest <= PASTE_CHUNK_BYTES + 2 ** 20
    assert python_peak < 16 * 2 ** 20
    # The RLEs are real masks of the full frame (large windows: 56 px cells scaled by 10).
    assert all(r["size"] == [h, w] for r in inst.pred_masks_rle)
    area = inst.pred_masks_rle.area()
    assert (area > 0).all() and area.max() > 100_000


# ------------------------------------------------------------------------------ NMS
@pytest.mark.parametrize("max_kept", [1, 10, 25, 100, 400, 1000])
def test_nms_first_equals_full_nms(max_kept):
    """60 objects with 10 near-duplicate boxes each: most prefixes hold too few survivors."""
    g = torch.Generator().manual_seed(max_kept)
    xy = (torch.rand(60, 1, 2, generator=g) * 100 + torch.rand(60, 10, 2, generator=g) * 3).view(600, 2)
    wh = (torch.rand(60, 1, 2, generator=g) * 40 + 5 + torch.rand(60, 10, 2, generator=g) * 3).view(600, 2)
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randint(0, 50, (600,), generator=g).float()  # many ties
    order = scores.argsort(descending=True, stable=True)
    ranks = torch.arange(600, 0, -1).float()
    ref = order[nms(boxes[order], ranks, 0.5)][:max_kept]  # plain NMS over everything
    assert torch.equal(nms_first(boxes, scores, 0.5, max_kept), ref)


def test_nms_at_threshold_one_keeps_everything_in_rank_order():
    """The shortcut at IoU threshold 1 (no NMS run) against torchvision's NMS at 1.0, with
    exact duplicates (IoU exactly 1) and ties; both passes of the two-pass variant too."""
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(200, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 10 + torch.rand(200, 2, generator=g) * 20], dim=1)
    boxes[100:] = boxes[:100]  # exact duplicates
    scores = torch.randint(0, 20, (200,), generator=g).float()
    order = scores.argsort(descending=True, stable=True)
    ref = order[nms(boxes[order], torch.arange(200, 0, -1).float(), 1.0)]
    assert ref.numel() == 200  # torchvision suppresses nothing at 1.0 either
    assert torch.equal(nms_first(boxes, scores, 1.0, 150), ref[:150])
    groups = torch.randint(0, 4, (200,), generator=g)
    assert torch.equal(nms_groups_first(boxes, scores, groups, 1.0, 150), ref[:150])


def _greedy_nms(boxes, order, thresh):
    """Textbook greedy NMS over ``order`` (a list of indices, best first): the reference."""
    kept = []
    for i in order:
        if all(box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= thresh for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("max_kept", [5, 40, 1000])
def test_nms_groups_first_equals_two_greedy_passes(max_kept):
    """Per group, then across groups on the survivors, as two written-out greedy loops."""
    g = torch.Generator().manual_seed(7 + max_kept)
    xy = (torch.rand(20, 1, 2, generator=g) * 60 + torch.rand(20, 6, 2, generator=g) * 4).view(120, 2)
    wh = (torch.rand(20, 1, 2, generator=g) * 30 + 5 + torch.rand(20, 6, 2, generator=g) * 4).view(120, 2)
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randperm(120, generator=g).float()  # distinct: the order is unambiguous
    groups = torch.randint(0, 3, (120,), generator=g)
    best_first = scores.argsort(descending=True).tolist()
    within = []
    for k in range(3):
        within += _greedy_nms(boxes, [i for i in best_first if groups[i] == k], 0.5)
    ref = _greedy_nms(boxes, sorted(within, key=lambda i: -scores[i].item()), 0.5)[:max_kept]
    got = nms_groups_first(boxes, scores, groups, 0.5, max_kept).tolist()
    assert got == ref


def test_nms_groups_first_differs_from_one_pass_as_documented():
    """A (group 0) suppresses B (group 1); B suppresses C within group 1 first, so C is lost,
    where one greedy pass keeps it (C overlaps A at IoU 0.67 < 0.7)."""
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10]], dtype=torch.float32)
    scores, groups = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0, 1, 1])
    assert nms_first(boxes, scores, 0.7, 10).tolist() == [0, 2]
    assert nms_groups_first(boxes, scores, groups, 0.7, 10).tolist() == [0]


# ------------------------------------------------------------------------------ CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_paste_and_rle_match_cpu():
    windows = random_windows(120, 160, p=200, seed=11)
    cpu = render_all(windows, max_proposals=80)
    cuda_windows = windows.to("cuda")
    for fmt in MASK_FORMATS:
        out = proposals_from_windows(cuda_windows, mask_format=fmt, max_proposals=80)
        assert out.pred_boxes.tensor.device.type == "cuda"
        torch.testing.assert_close(out.pred_boxes.tensor.cpu(), cpu[fmt].pred_boxes.tensor, atol=1, rtol=0)
        same = (proposal_bitmasks(out).cpu() == proposal_bitmasks(cpu[fmt])).float().mean()
        assert same > 0.999  # float rounding at the threshold only
