"""SegmentProposalEvaluator against an independent, direct pycocotools computation."""
import contextlib
import io
import itertools
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (applies detectron2 compatibility shims first)
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog, load_proposals_into_dataset
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.structures import Boxes, BoxMode, Instances

from instancefcn_d2.evaluation import (
    SegmentProposalEvaluator,
    instances_to_coco_results,
    instances_to_proposal_record,
    write_coco_results,
    write_proposal_pickle,
)
from instancefcn_d2.evaluation import segment_proposals as sp

# pycocotools' decode (used by the tests' own reference code) trips a numpy 2 deprecation.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

METRICS = ["AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]

# ----------------------------------------------------------------------------------------------
# A small COCO-format dataset: image id 0, non-contiguous ids, an image without annotations,
# a crowd region (uncompressed RLE), one compressed-RLE object, a two-part polygon, and objects
# in all three COCO area ranges (small < 32^2 <= medium < 96^2 <= large).
# ----------------------------------------------------------------------------------------------


def _poly_area(flat):
    x, y = np.asarray(flat[0::2], float), np.asarray(flat[1::2], float)
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _octagon(cx, cy, r):
    pts = []
    for i in range(8):
        a = 2 * math.pi * (i + 0.5) / 8
        pts += [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
    return pts


def _polygon_ann(polys, category_id):
    xs = [v for p in polys for v in p[0::2]]
    ys = [v for p in polys for v in p[1::2]]
    return {
        "segmentation": polys,
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
        "area": float(sum(_poly_area(p) for p in polys)),
        "iscrowd": 0,
        "category_id": category_id,
    }


def _ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[:h, :w]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1


def _rle_ann(mask, category_id, crowd):
    if crowd:  # COCO crowds are uncompressed RLE: run lengths in column-major order, zeros first
        flat = mask.flatten(order="F").astype(np.uint8)
        change = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat[0] == 1:
            counts = [0] + counts
        seg = {"size": list(mask.shape), "counts": counts}
    else:
        seg = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        seg["counts"] = seg["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    return {
        "segmentation": seg,
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                 float(ys.max() + 1 - ys.min())],
        "area": float(mask.sum()),
        "iscrowd": int(crowd),
        "category_id": category_id,
    }


def make_coco_json(path):
    """Write the synthetic dataset; returns the COCO dict."""
    images, anns = [], []

    def add(image_id, w, h, objs):
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.png"})
        for o in objs:
            anns.append(dict(o, id=len(anns) + 1, image_id=image_id))

    add(0, 200, 160, [
        _polygon_ann([_rect(10, 10, 130, 110)], 3),  # large, 12000 px
        _polygon_ann([[150, 20, 180, 20, 165, 40]], 9),  # small triangle, 300 px
        _polygon_ann([_octagon(160, 110, 25)], 3),  # medium
    ])
    crowd = np.zeros((180, 180), bool)
    crowd[120:170, 5:95] = True
    add(7, 180, 180, [
        _rle_ann(crowd, 9, crowd=True),
        _polygon_ann([_rect(100, 20, 160, 80)], 3),  # medium, 3600 px
        _polygon_ann([_rect(20, 20, 36, 36)], 9),  # small, 256 px
        _polygon_ann([_rect(60, 100, 110, 150)], 3),  # medium, overlaps the crowd
    ])
    add(42, 240, 160, [
        _rle_ann(_ellipse(160, 240, 60, 50, 40, 30), 9, crowd=False),  # medium RLE object
        _polygon_ann([_octagon(170, 90, 62)], 3),  # large
        _polygon_ann([_rect(10, 120, 35, 145)], 3),  # small, 625 px
    ])
    add(1000, 120, 100, [])  # no annotations
    add(13, 128, 128, [
        _polygon_ann([_rect(10, 10, 60, 60), _rect(70, 10, 100, 40)], 9),  # two parts
        _polygon_ann([_rect(10, 60, 60, 110)], 3),  # touches the one above
        _polygon_ann([_rect(100, 100, 120, 120)], 9),  # small
    ])
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
    }
    with open(path, "w") as f:
        json.dump(coco, f)
    return coco


_counter = itertools.count()


@pytest.fixture
def coco_json(tmp_path):
    path = str(tmp_path / "gt.json")
    make_coco_json(path)
    return path


def _register(coco_json, route):
    """Register the dataset three ways: with a json_file (COCOEvaluator-style), as dataset dicts
    with thing_classes (convert_to_coco_dict), and as dicts without any metadata."""
    name = f"ifcn_test_sp_{route}_{next(_counter)}"
    root = os.path.dirname(coco_json)
    if route == "json":
        register_coco_instances(name, {}, coco_json, root)
    elif route == "dicts":
        DatasetCatalog.register(name, lambda: load_coco_json(coco_json, root, dataset_name=name))
        DatasetCatalog.get(name)  # sets thing_classes on the metadata
    else:
        DatasetCatalog.register(name, lambda: load_coco_json(coco_json, root))
    return name


@pytest.fixture(params=["json", "dicts", "dicts_no_meta"])
def dataset(request, coco_json):
    name = _register(coco_json, request.param)
    yield name, coco_json
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.fixture
def json_dataset(coco_json):
    name = _register(coco_json, "json")
    yield name, coco_json
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


# ----------------------------------------------------------------------------------------------
# Proposals
# ----------------------------------------------------------------------------------------------


def _gt_masks(coco, image_id, include_crowd=False):
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    return [coco.annToMask(a).astype(bool) for a in anns if include_crowd or not a["iscrowd"]], [
        a for a in anns if include_crowd or not a["iscrowd"]
    ]


def _tight_boxes(masks):
    boxes = np.zeros((len(masks), 4))
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs):
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return boxes


def _shift(m, dy, dx):
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = m[
        max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)
    ]
    return out


def _erode(m, k):
    for _ in range(k):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        m = e
    return m


def _dilate(m, k):
    return ~_erode(~m, k)


def perturbed_proposals(coco, seed=0, num_false=140):
    """{image_id: (masks (N,H,W) bool, boxes (N,4) XYXY, scores (N,) sorted descending)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for img in coco.dataset["images"]:
        h, w = img["height"], img["width"]
        gts, _ = _gt_masks(coco, img["id"], include_crowd=True)
        masks = []
        for g in gts:
            masks.append(_shift(g, *rng.integers(-4, 5, size=2)))
            masks.append(_erode(g, int(rng.integers(1, 4))))
            masks.append(_dilate(g, int(rng.integers(1, 3))))
        for _ in range(num_false):
            x0, y0 = rng.integers(0, w - 4), rng.integers(0, h - 4)
            x1, y1 = rng.integers(x0 + 2, w + 1), rng.integers(y0 + 2, h + 1)
            if rng.random() < 0.5:
                m = np.zeros((h, w), bool)
                m[y0:y1, x0:x1] = True
            else:
                m = _ellipse(h, w, (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2)
            masks.append(m)
        masks.append(np.zeros((h, w), bool))  # an empty mask must not break anything
        masks = np.stack(masks)
        # Boxes: tight, jittered by up to 2 px so box AR differs from mask AR.
        boxes = _tight_boxes(masks) + rng.integers(-2, 3, size=(len(masks), 4))
        boxes = np.clip(boxes, 0, [w, h, w, h])
        scores = rng.permutation(len(masks)) / len(masks) + 0.5 / len(masks)  # distinct, shuffled
        order = np.argsort(-scores, kind="stable")
        out[img["id"]] = (masks[order], boxes[order], scores[order])
    return out


def gt_proposals(coco):
    """The non-crowd ground truth itself as proposals (masks rasterised, boxes from bbox)."""
    out = {}
    for img in coco.dataset["images"]:
        masks, anns = _gt_masks(coco, img["id"])
        h, w = img["height"], img["width"]
        boxes = np.array([BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
                          for a in anns]).reshape(-1, 4)
        masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        scores = np.linspace(0.9, 0.1, len(masks))
        out[img["id"]] = (masks, boxes, scores)
    return out


def to_io(coco, proposals):
    """Evaluator inputs/outputs for every image of ``proposals`` (dataset order)."""
    inputs, outputs = [], []
    for img in coco.dataset["images"]:
        if img["id"] not in proposals:
            continue
        masks, boxes, scores = proposals[img["id"]]
        scores_t = torch.as_tensor(scores, dtype=torch.float32)
        inst = Instances(
            (img["height"], img["width"]),
            pred_masks=torch.as_tensor(masks, dtype=torch.bool),
            pred_boxes=Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
            scores=scores_t,
            objectness_logits=torch.logit(scores_t),
        )
        inputs.append({"image_id": img["id"], "height": img["height"], "width": img["width"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def run_evaluator(name, coco, proposals, batch=2, **kwargs):
    kwargs.setdefault("distributed", False)
    ev = SegmentProposalEvaluator(name, **kwargs)
    ev.reset()
    inputs, outputs = to_io(coco, proposals)
    for i in range(0, len(inputs), batch):
        ev.process(inputs[i:i + batch], outputs[i:i + batch])
    return ev.evaluate()


def direct_stats(json_file, proposals, iou_type, max_dets):
    """Independent reference: plain pycocotools, AR read from ``stats`` (rows 6-11 are AR at
    maxDets[0], [1], [2] and small/medium/large at maxDets[2]); -1 (no ground truth in that
    range) -> None; in percent.

    COCOeval drops detections whose category is not among params.catIds even with useCats=0,
    and this dataset has no category 1: here the proposals take the first gt category instead
    (the evaluator widens catIds; either way the scores must agree)."""
    assert len(max_dets) == 3
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        cat = gt.getCatIds()[0]
        results = []
        for image_id, (masks, boxes, scores) in proposals.items():
            for m, b, s in zip(masks, boxes, scores):
                s = float(np.float32(s))  # the evaluator sees float32 scores
                if iou_type == "segm":
                    rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                    rle["counts"] = rle["counts"].decode("ascii")
                    results.append({"image_id": image_id, "category_id": cat,
                                    "segmentation": rle, "score": s})
                else:
                    b = [float(v) for v in np.float32(b)]
                    results.append({"image_id": image_id, "category_id": cat,
                                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
        dt = gt.loadRes(results)
        E = COCOeval(gt, dt, iou_type)
        E.params.useCats = 0
        E.params.maxDets = list(max_dets)
        E.params.imgIds = sorted(proposals)
        E.evaluate()
        E.accumulate()
        E.summarize()
    return [None if v == -1 else v * 100 for v in E.stats[6:12]]


def _assert_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if e is None:
            assert a is None
        else:
            assert a == pytest.approx(e, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_gt_as_proposals_gives_full_recall(dataset):
    name, json_file = dataset
    coco = COCO(json_file)
    res = run_evaluator(name, coco, gt_proposals(coco))
    assert list(res) == ["segm_proposals", "box_proposals"]
    for task in res:
        assert list(res[task]) == METRICS
        for m in METRICS:
            assert res[task][m] == pytest.approx(100.0), (task, m)


def test_perturbed_proposals_match_direct_pycocotools(dataset):
    name, json_file = dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco)
    res = run_evaluator(name, coco, props)
    print("\n" + sp.format_ar_table(res))
    for task, iou_type in (("segm_proposals", "segm"), ("box_proposals", "bbox")):
        expected = direct_stats(json_file, props, iou_type, [10, 100, 1000])
        _assert_close([res[task][m] for m in METRICS], expected)
        values = [res[task][m] for m in METRICS]
        # The data is built so every cell is exercised: recall grows with N, all areas present.
        assert 0 < values[0] < values[1] < values[2] < 100
        assert all(0 < v <= 100 for v in values[3:])
    assert res["segm_proposals"] != res["box_proposals"]


def test_recall_per_level_is_each_levels_proposals_scored_alone(json_dataset):
    # Perturbed proposals split over two feature levels (every third on level 1): each level's
    # AR@1000 equals plain pycocotools on that level's proposals alone (all images scored).
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco)
    levels = {i: np.arange(len(p[2])) % 3 == 0 for i, p in props.items()}
    ev = SegmentProposalEvaluator(name, distributed=False)
    inputs, outputs = to_io(coco, props)
    for inp, out in zip(inputs, outputs):
        out["instances"].levels = torch.as_tensor(levels[inp["image_id"]].astype(np.int64))
    ev.process(inputs, outputs)
    res = ev.evaluate()
    for task, iou_type in (("segm_proposals", "segm"), ("box_proposals", "bbox")):
        assert list(res[f"{task}_per_level"]) == ["AR@1000_level0", "AR@1000_level1"]
        for level in (0, 1):
            mine = {i: tuple(x[levels[i] == bool(level)] for x in p) for i, p in props.items()}
            expected = direct_stats(json_file, mine, iou_type, [10, 100, 1000])[2]
            assert res[f"{task}_per_level"][f"AR@1000_level{level}"] == pytest.approx(expected, abs=1e-9)
        assert 0 < res[f"{task}_per_level"]["AR@1000_level1"] < res[task]["AR@1000"]
    # One level only (the single-level model): no per-level entries.
    for out in outputs:
        out["instances"].levels = torch.zeros(len(out["instances"]), dtype=torch.long)
    ev.reset()
    ev.process(inputs, outputs)
    assert list(ev.evaluate()) == ["segm_proposals", "box_proposals"]


def test_area_split_and_any_max_dets(json_dataset):
    """Recall is read per maxDet from eval["recall"], so any list works, not just 3 entries."""
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco, seed=1)
    res = run_evaluator(name, coco, props, max_dets=(300, 10, 1000, 100))  # unsorted on purpose
    seg = res["segm_proposals"]
    assert list(seg) == ["AR@10", "AR@100", "AR@300", "AR@1000", "ARs@1000", "ARm@1000",
                         "ARl@1000"]
    low = direct_stats(json_file, props, "segm", [10, 100, 300])
    high = direct_stats(json_file, props, "segm", [10, 100, 1000])
    _assert_close([seg["AR@10"], seg["AR@100"], seg["AR@300"]], low[:3])
    _assert_close([seg["AR@1000"], seg["ARs@1000"], seg["ARm@1000"], seg["ARl@1000"]], high[2:])

    # COCO's default maxDets [1, 10, 100]: the case where `stats` rows and our keys coincide.
    res = run_evaluator(name, coco, props, max_dets=(1, 10, 100))
    for task, iou_type in (("segm_proposals", "segm"), ("box_proposals", "bbox")):
        expected = direct_stats(json_file, props, iou_type, [1, 10, 100])
        keys = ["AR@1", "AR@10", "AR@100", "ARs@100", "ARm@100", "ARl@100"]
        _assert_close([res[task][k] for k in keys], expected)


def test_subset_of_images_and_missing_ranges(json_dataset):
    """Only processed images count; a range without ground truth is NaN, not an error."""
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = {0: perturbed_proposals(coco)[0]}  # image 0 only: no crowd, one object per range
    res = run_evaluator(name, coco, props)
    _assert_close([res["segm_proposals"][m] for m in METRICS],
                  direct_stats(json_file, props, "segm", [10, 100, 1000]))

    props = {1000: perturbed_proposals(coco)[1000]}  # no ground truth at all
    res = run_evaluator(name, coco, props)
    assert all(v is None for task in res.values() for v in task.values())
    # Undefined recall: "–" in the table, null in JSON (not the invalid token NaN).
    assert json.loads(json.dumps(res, allow_nan=False))["segm_proposals"]["ARl@1000"] is None
    table = sp.format_ar_table(res)
    assert "nan" not in table.lower()
    assert table.splitlines()[2].split("|")[2].strip() == "–"


def test_table_prints_a_dash_only_for_missing_ranges():
    res = {"segm_proposals": {"AR@10": 12.3456, "ARs@1000": None, "ARl@1000": 0.0}}
    row = [c.strip() for c in sp.format_ar_table(res).splitlines()[2].split("|")[1:-1]]
    assert row == ["segm_proposals", "12.346", "–", "0.000"]


def test_zero_proposals_give_zero_recall(dataset, tmp_path):
    name, json_file = dataset
    coco = COCO(json_file)
    empty = {img["id"]: (np.zeros((0, img["height"], img["width"]), bool), np.zeros((0, 4)),
                         np.zeros(0)) for img in coco.dataset["images"]}
    res = run_evaluator(name, coco, empty, output_dir=str(tmp_path / "out"))
    for task in ("segm_proposals", "box_proposals"):
        assert res[task] == {m: 0.0 for m in METRICS}
    assert json.load(open(tmp_path / "out" / sp.COCO_RESULTS_FILE)) == []
    with open(tmp_path / "out" / sp.PROPOSAL_PICKLE_FILE, "rb") as f:
        data = pickle.load(f)
    assert data["ids"] == [img["id"] for img in coco.dataset["images"]]
    assert all(b.shape == (0, 4) for b in data["boxes"])


def test_no_images_processed_returns_empty(json_dataset):
    name, _ = json_dataset
    ev = SegmentProposalEvaluator(name, distributed=False)
    ev.reset()
    assert ev.evaluate() == {}


def test_exports_load_with_pycocotools_and_detectron2(json_dataset, tmp_path):
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco, seed=2, num_false=20)
    out = tmp_path / "out"
    res = run_evaluator(name, coco, props, output_dir=str(out))

    # (a) COCO results JSON: plain json, COCO.loadRes, masks and boxes round-trip.
    results = json.load(open(out / sp.COCO_RESULTS_FILE))
    assert len(results) == sum(len(p[2]) for p in props.values())
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(str(out / sp.COCO_RESULTS_FILE))
    assert len(dt.getAnnIds()) == len(results)
    by_image = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for image_id, (masks, boxes, scores) in props.items():
        rs = by_image.get(image_id, [])
        assert len(rs) == len(masks)
        for r, m, b, s in zip(rs, masks, boxes, scores):
            assert r["category_id"] == 1
            assert np.array_equal(mask_util.decode(r["segmentation"]).astype(bool), m)
            assert r["bbox"] == [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            assert r["score"] == pytest.approx(s, rel=1e-6)

    # (b) Proposal pickle through detectron2's own loader.
    dicts = load_proposals_into_dataset(DatasetCatalog.get(name), str(out / sp.PROPOSAL_PICKLE_FILE))
    with open(out / sp.PROPOSAL_PICKLE_FILE, "rb") as f:
        raw = pickle.load(f)
    assert raw["ids"] == [img["id"] for img in coco.dataset["images"]]
    assert raw["bbox_mode"] == BoxMode.XYXY_ABS
    for d in dicts:
        masks, boxes, scores = props[d["image_id"]]
        assert d["proposal_bbox_mode"] == BoxMode.XYXY_ABS
        assert d["proposal_boxes"].dtype == np.float32
        np.testing.assert_array_equal(d["proposal_boxes"], boxes.astype(np.float32))
        np.testing.assert_allclose(d["proposal_objectness_logits"],  # the logits of the scores, in float64
                                   torch.logit(torch.tensor(scores, dtype=torch.float64)).numpy(), rtol=1e-6)
    # The written results score the same as the in-memory ones: plain COCOeval on the file.
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(coco, coco.loadRes(str(out / sp.COCO_RESULTS_FILE)), "segm")
        E.params.useCats = 0
        E.params.catIds = sorted(set(coco.getCatIds()) | {1})  # the proposals' category
        E.params.maxDets = [10, 100, 1000]
        E.params.imgIds = sorted(props)
        E.evaluate()
        E.accumulate()
        E.summarize()
    from_file = [None if v == -1 else v * 100 for v in E.stats[6:12]]
    assert from_file[2] > 0
    _assert_close([res["segm_proposals"][m] for m in METRICS], from_file)


def test_instances_to_coco_results_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    masks = rng.random((5, 37, 53)) > 0.7
    boxes = np.array([[1.5, 2.0, 30.25, 20.0]] * 5)
    inst = Instances((37, 53), pred_masks=torch.from_numpy(masks),
                     pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                     scores=torch.linspace(0.9, 0.1, 5))
    res = instances_to_coco_results(inst, np.int64(0))
    assert [r["image_id"] for r in res] == [0] * 5 and type(res[0]["image_id"]) is int
    assert res[0]["bbox"] == [1.5, 2.0, 28.75, 18.0]
    for r, m in zip(res, masks):
        assert np.array_equal(mask_util.decode(r["segmentation"]).astype(bool), m)
    write_coco_results(res, tmp_path / "r.json")
    assert json.load(open(tmp_path / "r.json")) == res
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert instances_to_coco_results(inst[[]], 5) == []


def test_image_ids_are_stored_as_python_values(tmp_path):
    """numpy / tensor integer ids come out as plain ints in the JSON and the pickle; other ids
    (file stems) unchanged."""
    inst = Instances((8, 8), pred_masks=torch.ones(1, 8, 8, dtype=torch.bool),
                     pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]])), scores=torch.tensor([0.5]))
    res = instances_to_coco_results(inst, torch.tensor(3))
    assert type(res[0]["image_id"]) is int and json.loads(json.dumps(res))[0]["image_id"] == 3
    records = [instances_to_proposal_record(inst, torch.tensor(7)),
               (np.int64(8), np.zeros((0, 4)), np.zeros(0)), ("img_a", np.zeros((0, 4)), np.zeros(0))]
    assert type(records[0][0]) is int
    write_proposal_pickle(records, tmp_path / "p.pkl")
    with open(tmp_path / "p.pkl", "rb") as f:
        ids = pickle.load(f)["ids"]
    assert ids == [7, 8, "img_a"] and [type(i) for i in ids] == [int, int, str]


def test_gather_with_a_real_process_group(json_dataset, tmp_path):
    """distributed=True under an initialised (world size 1, gloo) process group."""
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco, seed=4, num_false=30)
    expected = run_evaluator(name, coco, props)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1
    )
    try:
        assert comm.get_world_size() == 1 and comm.is_main_process()
        got = run_evaluator(name, coco, props, distributed=True)
    finally:
        torch.distributed.destroy_process_group()
    assert got == expected


def test_gather_merges_ranks(json_dataset, monkeypatch):
    """Two ranks' shares, merged by the main process, score like one process seeing it all;
    a non-main rank returns {} and computes nothing."""
    name, json_file = json_dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco, seed=5, num_false=30)
    expected = run_evaluator(name, coco, props)

    inputs, outputs = to_io(coco, props)
    ranks = [SegmentProposalEvaluator(name, distributed=True) for _ in range(2)]
    for i, (inp, outp) in enumerate(zip(inputs, outputs)):  # InferenceSampler-like split
        ranks[i % 2].process([inp], [outp])
    shares = [r._predictions for r in ranks]

    monkeypatch.setattr(comm, "gather", lambda data, dst=0, group=None: shares)
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    assert ranks[0].evaluate() == expected

    monkeypatch.setattr(comm, "gather", lambda data, dst=0, group=None: [])
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    monkeypatch.setattr(sp, "load_coco_gt", lambda *_: pytest.fail("non-main rank evaluated"))
    assert ranks[1].evaluate() == {}


def _two_rank_worker(rank, json_file, init_file, out_file):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        name = _register(json_file, "json")
        coco = COCO(json_file)
        props = perturbed_proposals(coco, seed=6, num_false=30)
        inputs, outputs = to_io(coco, props)
        ev = SegmentProposalEvaluator(name, distributed=True)
        ev.reset()
        for i in range(rank, len(inputs), 2):
            ev.process([inputs[i]], [outputs[i]])
        res = ev.evaluate()
        if rank == 0:
            with open(out_file, "w") as f:
                json.dump(res, f)
        else:
            assert res == {}
    finally:
        torch.distributed.destroy_process_group()


def test_gather_across_two_real_processes(json_dataset, tmp_path, spawn):
    """detectron2's comm.gather (pickled byte tensors over gloo) between two CPU processes."""
    name, json_file = json_dataset
    coco = COCO(json_file)
    expected = run_evaluator(name, coco, perturbed_proposals(coco, seed=6, num_false=30))
    out_file = tmp_path / "rank0.json"
    spawn(_two_rank_worker, (json_file, str(tmp_path / "pg"), str(out_file)), nprocs=2)
    assert json.load(open(out_file)) == json.loads(json.dumps(expected))


def test_rpn_proposals_are_scored_as_boxes(dataset):
    """detectron2's ProposalNetwork output (``{"proposals": Instances(proposal_boxes,
    objectness_logits)}``, no masks) gives box AR only, equal to plain pycocotools on the boxes
    ranked by objectness."""
    name, json_file = dataset
    coco = COCO(json_file)
    props = perturbed_proposals(coco)
    inputs, outputs = to_io(coco, props)
    rpn_outputs = [{"proposals": Instances(o["instances"].image_size,
                                           proposal_boxes=o["instances"].pred_boxes,
                                           objectness_logits=o["instances"].objectness_logits)}
                   for o in outputs]
    ev = SegmentProposalEvaluator(name, distributed=False)
    ev.reset()
    ev.process(inputs, rpn_outputs)
    res = ev.evaluate()
    assert list(res) == ["box_proposals"]
    _assert_close([res["box_proposals"][m] for m in METRICS],
                  direct_stats(json_file, props, "bbox", [10, 100, 1000]))
