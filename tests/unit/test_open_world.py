"""Open-world proposals: training on a category subset, scoring AR on another subset.

References are independent of the code under test: plain pycocotools COCOeval on ground truth
from which the other categories were *removed* (for recall this equals ignoring them: COCO's
matcher prefers scored objects, so ignored ones never take a hit from them), proposals dropped
by a naive numpy IoU loop, and hand-computed values.
"""
import contextlib
import io
import itertools
import json
import os

import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (applies detectron2 compatibility shims first)
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import BoxMode, Boxes, Instances

from instancefcn_d2 import add_instancefcn_config
from instancefcn_d2.data import InstanceFCNDatasetMapper
from instancefcn_d2.engine import check_config
from instancefcn_d2.evaluation import SegmentProposalEvaluator
from instancefcn_d2.targets import WindowLabeler, inside_windows, window_boxes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MAX_DETS = (1, 3, 10)
_names = itertools.count()


# ----------------------------------------------------------------------------------------------
# Hand-built ground truth: categories 4 ("seen"), 7 and 9 ("unseen"), rectangles as polygons.
# ----------------------------------------------------------------------------------------------
def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _ann(rect, category_id, iscrowd=0):
    x0, y0, x1, y1 = rect
    return {"segmentation": [_rect(*rect)], "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float((x1 - x0) * (y1 - y0)), "category_id": category_id, "iscrowd": iscrowd}


SCENES = {  # image id -> (w, h, [(rect, category)])
    1: (120, 100, [((10, 10, 50, 60), 4), ((55, 10, 110, 50), 7), ((20, 65, 90, 95), 9)]),
    2: (100, 100, [((5, 5, 60, 60), 4), ((62, 62, 95, 95), 4), ((30, 40, 70, 90), 7)]),
    3: (80, 80, [((10, 10, 70, 70), 9)]),
    4: (80, 80, [((10, 10, 70, 70), 4)]),  # only seen objects
}


def _write_gt(path, scenes=SCENES):
    images, anns = [], []
    for image_id, (w, h, objs) in scenes.items():
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.png"})
        for rect, cat in objs:
            anns.append(dict(_ann(rect, cat), id=len(anns) + 1, image_id=image_id))
    cats = [{"id": 4, "name": "seen"}, {"id": 7, "name": "unseen_a"}, {"id": 9, "name": "unseen_b"}]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return path


def _mask(w, h, rect):
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = rect
    m[y0:y1, x0:x1] = True
    return m


def _proposals(seed=0):
    """{image id: (masks (N,H,W), boxes (N,4) XYXY, scores (N,) descending)}: jittered copies of
    every object (seen ones ranked high, so the budget rule matters) plus random boxes."""
    rng = np.random.default_rng(seed)
    out = {}
    for image_id, (w, h, objs) in SCENES.items():
        rects, scores = [], []
        for rect, cat in objs:
            for _ in range(3):
                j = rng.integers(-3, 4, size=4)
                r = np.clip(np.array(rect) + j, 0, [w, h, w, h])
                rects.append(r)
                scores.append(rng.uniform(0.6, 1.0) if cat == 4 else rng.uniform(0.2, 0.9))
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 10), rng.integers(0, h - 10)
            rects.append(np.array([x0, y0, rng.integers(x0 + 5, w + 1), rng.integers(y0 + 5, h + 1)]))
            scores.append(rng.uniform(0.0, 0.8))
        order = np.argsort(-np.array(scores), kind="stable")
        masks = np.stack([_mask(w, h, rects[i]) for i in order])
        boxes = np.stack([rects[i] for i in order]).astype(np.float32)
        out[image_id] = (masks, boxes, np.array(scores, np.float32)[order])
    return out


@pytest.fixture
def dataset(tmp_path):
    path = _write_gt(str(tmp_path / "gt.json"))
    name = f"ifcn_test_open_world_{next(_names)}"
    register_coco_instances(name, {}, path, str(tmp_path))
    yield name, path
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, proposals, **kwargs):
    ev = SegmentProposalEvaluator(name, max_dets=MAX_DETS, distributed=False, **kwargs)
    ev.reset()
    for image_id, (masks, boxes, scores) in proposals.items():
        w, h, _ = SCENES[image_id]
        s = torch.as_tensor(scores)
        inst = Instances((h, w), pred_masks=torch.as_tensor(masks), pred_boxes=Boxes(torch.as_tensor(boxes)),
                         scores=s, objectness_logits=torch.logit(s))
        ev.process([{"image_id": image_id, "height": h, "width": w}], [{"instances": inst}])
    return ev.evaluate()


def _reference(json_file, proposals, eval_ids, iou_type, exclude_seen):
    """Plain COCOeval (useCats=0) on GT restricted to ``eval_ids``; with ``exclude_seen``,
    proposals at IoU >= 0.5 (pixel counts / box arithmetic in numpy) with another category's
    object are dropped first. AR in percent at each of MAX_DETS."""
    with open(json_file) as f:
        data = json.load(f)
    other = [a for a in data["annotations"] if a["category_id"] not in eval_ids]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in eval_ids]
    results = []
    for image_id, (masks, boxes, scores) in proposals.items():
        w, h, _ = SCENES[image_id]
        for m, b, s in zip(masks, boxes, scores):
            if exclude_seen:
                ious = []
                for a in other:
                    if a["image_id"] != image_id:
                        continue
                    x, y, bw, bh = a["bbox"]
                    if iou_type == "segm":
                        g = _mask(w, h, (x, y, x + bw, y + bh))
                        ious.append((m & g).sum() / max((m | g).sum(), 1))
                    else:
                        ix = max(0.0, min(b[2], x + bw) - max(b[0], x))
                        iy = max(0.0, min(b[3], y + bh) - max(b[1], y))
                        inter = ix * iy
                        ious.append(inter / ((b[2] - b[0]) * (b[3] - b[1]) + bw * bh - inter))
                if ious and max(ious) >= 0.5:
                    continue
            r = {"image_id": image_id, "category_id": eval_ids[0], "score": float(s)}
            if iou_type == "segm":
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                r["segmentation"] = dict(rle, counts=rle["counts"].decode("ascii"))
            else:
                r["bbox"] = [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]
            results.append(r)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        E = COCOeval(gt, gt.loadRes(results), iou_type)
        E.params.useCats = 0
        E.params.maxDets = list(MAX_DETS)
        E.params.imgIds = sorted(SCENES)
        E.evaluate()
        E.accumulate()
    rec = E.eval["recall"][:, :, 0, :]  # (T, K, M), area "all"
    return [float(np.mean(rec[:, :, i][rec[:, :, i] > -1]) * 100) for i in range(len(MAX_DETS))]


@pytest.mark.parametrize("rule", ["oln", "exclude_seen"])
def test_budget_rules_match_direct_pycocotools(dataset, rule):
    name, json_file = dataset
    proposals = _proposals()
    res = _evaluate(name, proposals, eval_category_ids=[7, 9], budget_rule=rule)
    for key, iou_type in (("segm_proposals", "segm"), ("box_proposals", "bbox")):
        expected = _reference(json_file, proposals, [7, 9], iou_type, exclude_seen=(rule == "exclude_seen"))
        got = [res[key][f"AR@{m}"] for m in MAX_DETS]
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=f"{rule} {iou_type}")
    # The seen objects outrank the unseen ones, so the rule must matter at small N.
    if rule == "exclude_seen":
        oln = _evaluate(name, proposals, eval_category_ids=[7, 9], budget_rule="oln")
        assert res["segm_proposals"]["AR@1"] > oln["segm_proposals"]["AR@1"]


def test_budget_rules_hand_computed(dataset):
    """Image 1 alone: the seen object's exact mask ranks first, then the two unseen objects'.
    AR@1: "oln" 0 (the seen proposal used the budget), "exclude_seen" 50 (one of two found);
    AR@3: both 100. Without a subset, all three objects count: AR@1 = 100/3."""
    name, _ = dataset
    w, h, objs = SCENES[1]
    masks = np.stack([_mask(w, h, r) for r, _ in objs])
    boxes = np.array([r for r, _ in objs], np.float32)
    props = {1: (masks, boxes, np.array([0.9, 0.8, 0.7], np.float32))}
    for rule, ar1 in (("oln", 0.0), ("exclude_seen", 50.0)):
        res = _evaluate(name, props, eval_category_ids=[7, 9], budget_rule=rule)
        for key in ("segm_proposals", "box_proposals"):
            assert res[key]["AR@1"] == pytest.approx(ar1)
            assert res[key]["AR@3"] == pytest.approx(100.0)
    res = _evaluate(name, props)
    assert res["segm_proposals"]["AR@1"] == pytest.approx(100.0 / 3)


def test_no_subset_changes_nothing(dataset):
    name, json_file = dataset
    proposals = _proposals(seed=1)
    default = _evaluate(name, proposals)
    for rule in ("oln", "exclude_seen"):
        same = _evaluate(name, proposals, eval_category_ids=None, budget_rule=rule)
        assert json.dumps(same) == json.dumps(default)  # (NaN-aware equality)
    np.testing.assert_allclose([default["segm_proposals"][f"AR@{m}"] for m in MAX_DETS],
                               _reference(json_file, proposals, [4, 7, 9], "segm", exclude_seen=False))


def test_bad_category_ids_and_rule(dataset):
    name, _ = dataset
    with pytest.raises(ValueError, match=r"\[5\] are not categories"):
        _evaluate(name, _proposals(), eval_category_ids=[7, 5])
    with pytest.raises(ValueError, match="budget_rule"):
        SegmentProposalEvaluator(name, budget_rule="oln_style")


# ----------------------------------------------------------------------------------------------
# Training on a subset: the mapper drops (or ignores) the other categories, the labeler follows.
# ----------------------------------------------------------------------------------------------
STRIDE, M = 8, 13  # windows of 104 px; canonical object size 104 * 128/224 ~ 59 px
SEEN_RECT, UNSEEN_RECT = (16, 16, 71, 71), (120, 100, 175, 155)  # 55 px squares, far apart


def _scene_dict(tmp_path):
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, np.random.default_rng(0).integers(0, 255, (192, 200, 3), dtype=np.uint8))
    anns = []
    for rect, cat in ((SEEN_RECT, 0), (UNSEEN_RECT, 1)):
        a = _ann(rect, cat)
        a["bbox_mode"] = BoxMode.XYWH_ABS
        anns.append(a)
    return {"file_name": path, "height": 192, "width": 200, "image_id": 1, "annotations": anns}


def _labels(record, **mapper_kwargs):
    mapper = InstanceFCNDatasetMapper(True, augmentations=[], image_format="BGR", **mapper_kwargs)
    d = mapper(record)
    h, w = d["image"].shape[1:]
    fh, fw = (h + STRIDE - 1) // STRIDE, (w + STRIDE - 1) // STRIDE
    windows = window_boxes(fh, fw, STRIDE, M)
    inside = inside_windows(fh, fw, (h, w), STRIDE)
    labels, matched = WindowLabeler()(windows, d["instances"].gt_boxes.tensor, d["crowd_boxes"].tensor, inside)
    return labels, matched, d["instances"]


def test_training_subset_drops_or_ignores_other_categories(tmp_path):
    record = _scene_dict(tmp_path)
    labels, matched, inst = _labels(record)
    assert inst.gt_classes.tolist() == [0, 1]
    pos_seen = (labels == 1) & (matched == 0)
    pos_unseen = (labels == 1) & (matched == 1)
    assert pos_seen.any() and pos_unseen.any()

    # "background": the unseen object is gone; its positive windows become negatives.
    bg, bg_matched, bg_inst = _labels(record, train_category_ids=[0], unseen_as="background")
    assert bg_inst.gt_classes.tolist() == [0]
    assert torch.equal(bg == 1, pos_seen) and torch.equal(bg_matched[pos_seen], matched[pos_seen])
    assert (bg[pos_unseen] == 0).all()

    # "ignore": its positive windows are ignored (-1), neither positive nor negative.
    ig, _, ig_inst = _labels(record, train_category_ids=[0], unseen_as="ignore")
    assert ig_inst.gt_classes.tolist() == [0]
    assert torch.equal(ig == 1, pos_seen)
    assert (ig[pos_unseen] == -1).all()

    # The mirror split keeps exactly the other object's positives.
    other, _, other_inst = _labels(record, train_category_ids=[1])
    assert other_inst.gt_classes.tolist() == [1] and torch.equal(other == 1, pos_unseen)


def test_config_ids_are_dataset_ids(tmp_path):
    """DATASETS.TRAIN_CATEGORY_IDS names categories as the JSON does (4, 7, 9 here); the mapper
    receives the contiguous ids detectron2's loader gives them; unknown ids and values fail
    clearly, and before training."""
    json_file = _write_gt(str(tmp_path / "gt.json"))
    name = f"ifcn_test_open_world_{next(_names)}"
    register_coco_instances(name, {}, json_file, str(tmp_path))
    try:
        cfg = get_cfg()
        add_instancefcn_config(cfg)
        cfg.DATASETS.TRAIN = (name,)
        cfg.DATASETS.TRAIN_CATEGORY_IDS = [9, 4]
        cfg.DATASETS.TRAIN_UNSEEN_AS = "ignore"
        mapper = InstanceFCNDatasetMapper(cfg, True)
        assert mapper.train_category_ids == {0, 2} and mapper.unseen_as == "ignore"
        assert InstanceFCNDatasetMapper(cfg, False).train_category_ids is None
        cfg.DATASETS.TRAIN_CATEGORY_IDS = [4, 8]
        with pytest.raises(ValueError, match=r"Category ids \[8\] are not categories of dataset"):
            InstanceFCNDatasetMapper(cfg, True)
        cfg.DATASETS.TRAIN_CATEGORY_IDS = [4]
        cfg.DATASETS.TRAIN_UNSEEN_AS = "ignored"
        with pytest.raises(ValueError, match="TRAIN_UNSEEN_AS"):
            InstanceFCNDatasetMapper(cfg, True)

        # train_net checks the keys before training (the evaluator is built only after it).
        cfg.DATASETS.TRAIN_UNSEEN_AS = "background"
        cfg.DATASETS.TEST = (name,)
        cfg.MODEL.WEIGHTS = ""
        check_config(cfg, check_files=False)
        cfg.TEST.PROPOSAL_EVAL_CATEGORY_IDS = [7, 10]
        with pytest.raises(ValueError, match=r"TEST.PROPOSAL_EVAL_CATEGORY_IDS: Category ids \[10\]"):
            check_config(cfg, check_files=False)
        cfg.TEST.PROPOSAL_EVAL_CATEGORY_IDS = [7]
        cfg.TEST.PROPOSAL_BUDGET_RULE = "exclude"
        with pytest.raises(ValueError, match="PROPOSAL_BUDGET_RULE"):
            check_config(cfg, check_files=False)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.mark.parametrize("config", sorted(os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "open_world"))))
def test_open_world_configs_load(config):
    from instancefcn_d2.engine import merge_config  # (typos in keys fail there)

    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "open_world", config)
    with open(path) as f:
        base = next(line.split(":", 1)[1].strip().strip('"') for line in f if line.startswith("_BASE_"))
    if not os.path.isfile(os.path.join(os.path.dirname(path), base)):
        pytest.skip(f"{base} is not on this branch yet")
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, path)
    train, test = set(cfg.DATASETS.TRAIN_CATEGORY_IDS), set(cfg.TEST.PROPOSAL_EVAL_CATEGORY_IDS)
    assert train and test and not train & test
    if "COCO" in config:
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

        coco = {c["id"] for c in COCO_CATEGORIES if c["isthing"]}
        assert len(train) == 20 and train | test == coco


def test_train_net_open_world_smoke(tmp_path, synthetic_root, train_net, load_tool):
    """train_net with the synthetic open-world config (4 iterations on tiny images): the keys
    reach the mapper and the evaluator, and the AR table names the scored kinds and the rule."""
    out = tmp_path / "ow"
    train_net(["--config-file", "configs/open_world/InstanceFCN-VGG16-FPN-synthetic-seen-to-unseen.yaml",
               *load_tool("quickstart").SMOKE_OPTS, "MODEL.WEIGHTS", "", "TEST.PROPOSAL_BUDGET_RULE", "exclude_seen",
               "OUTPUT_DIR", out])
    log = (out / "log.txt").read_text()
    assert ("scored categories (2 of 5): 3 polygon, 4 star; other categories ignored; "
            "top-N budget rule 'exclude_seen'") in log
    ar = json.loads((out / "proposal_ar.json").read_text())
    assert {"segm_proposals", "box_proposals"} <= set(ar)
