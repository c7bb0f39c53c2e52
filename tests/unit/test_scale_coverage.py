"""Scale coverage and planning: which object sizes the windows learn / propose, and the plan.

References: a naive per-object loop over scales, crop sizes and levels that resizes with
detectron2's own ``ResizeShortestEdge.get_output_shape``; hand-computed sizes; the trainer's
real mapper and model for the planned config.
"""
import contextlib
import io
import json
import logging
import math
import os
import sys

import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401
from instancefcn_d2 import add_instancefcn_config
from instancefcn_d2.data import InstanceFCNDatasetMapper, generate_split
from instancefcn_d2.data.datasets import SYNTHETIC_PRESETS
from instancefcn_d2.engine import check_config, merge_config
from instancefcn_d2 import scale_coverage as sc  # (module: pytest would collect its test_* functions)
from instancefcn_d2.scale_coverage import ObjectSizes, ScaleSetup, in_features, scale_setup_from_config

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml")
sys.path.insert(0, os.path.join(REPO, "tools"))
import plan_scales  # noqa: E402


# ----------------------------------------------------------------------------- naive reference
def _positive(size, setup):
    return any(abs(math.log2(size / (setup.canonical_ratio * setup.window_size * s))) <= setup.band_log2
               for s in setup.strides)


def _crop_sizes(h, w, crop):
    if crop is None:
        return [(h, w)]
    kind, (a, b) = crop
    if kind == "absolute":
        return [(min(int(a), h), min(int(b), w))]
    assert kind == "absolute_range"
    return [(ch, cw) for ch in range(min(h, int(a)), min(h, int(b)) + 1)
            for cw in range(min(w, int(a)), min(w, int(b)) + 1)]


def naive_train(bw, bh, h, w, setup):
    scales = (range(setup.train_scales[0], setup.train_scales[1] + 1) if setup.sampling == "range"
              else setup.train_scales)
    for ch, cw in _crop_sizes(h, w, setup.crop):
        if bw > cw or bh > ch:
            continue  # never wholly inside a crop
        for s in scales:
            nh, nw = ResizeShortestEdge.get_output_shape(ch, cw, s, setup.train_max_size)
            if _positive(max(bw * nw / cw, bh * nh / ch), setup):
                return True
    return False


def naive_test(bw, bh, h, w, setup):
    for s in setup.test_scales:
        f = min(s / min(h, w), setup.test_max_size / max(h, w))
        nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        if _positive(max(bw * nw / w, bh * nh / h), setup):
            return True
    return False


def random_objects(n, seed):
    rng = np.random.default_rng(seed)
    hw = rng.integers(60, 400, size=(n, 2))
    wh = np.exp(rng.uniform(np.log(0.03), np.log(0.9), size=(n, 2))) * hw[:, ::-1]
    return ObjectSizes(wh, hw)


BASE = ScaleSetup(train_scales=(80, 113, 160, 226, 320), train_max_size=480, test_scales=(80, 160, 320, 640),
                  test_max_size=900, strides=(8,))


@pytest.mark.parametrize("setup", [
    BASE,
    BASE.with_(strides=(4, 8, 16, 32)),
    BASE.with_(train_scales=(100, 300), sampling="range"),
    BASE.with_(crop=("absolute", (64, 96))),
    BASE.with_(crop=("absolute_range", (40, 60)), train_scales=(200, 420)),
    BASE.with_(band_log2=0.5, window_size=11, canonical_ratio=0.5),
], ids=["one-level", "pyramid", "range", "crop", "crop-range", "other-window"])
def test_coverage_matches_naive_loop(setup):
    objs = random_objects(150, seed=len(str(setup)))
    got_train, got_test = sc.train_coverage(objs, setup), sc.test_coverage(objs, setup)
    want_train = [naive_train(bw, bh, h, w, setup) for (bw, bh), (h, w) in zip(objs.box_wh, objs.image_hw)]
    want_test = [naive_test(bw, bh, h, w, setup) for (bw, bh), (h, w) in zip(objs.box_wh, objs.image_hw)]
    assert got_train.tolist() == want_train
    assert got_test.tolist() == want_test
    assert 0 < np.mean(want_train) < 1 or setup.sampling == "range"  # the cases are not trivial


def test_hand_computed_sizes():
    # m = 21, stride 8: window 168 px, canonical 96 px, band 80.7-114.2 px.
    setup = ScaleSetup(train_scales=(400,), train_max_size=10000, test_scales=(100,), test_max_size=10000,
                       strides=(8,))
    objs = ObjectSizes(np.array([[48.0, 20.0], [30.0, 30.0], [20.0, 60.0]]), np.array([[200, 300]] * 3))
    # x2 at scale 400: 96 (yes), 60 (too small), 120 (too large)
    assert sc.train_coverage(objs, setup).tolist() == [True, False, False]
    # x0.5 at test scale 100: nothing reaches 80 px; at 400 the first one does
    assert not sc.test_coverage(objs, setup).any()
    assert sc.test_coverage(objs, setup.with_(test_scales=(100, 400))).tolist() == [True, False, False]
    # detectron2 crops first: a 100-px crop resized to 300 magnifies x3 -> 144, 90, 180 px.
    crop = setup.with_(crop=("absolute", (100, 100)), train_scales=(300,))
    assert sc.train_coverage(objs, crop).tolist() == [False, True, False]
    # An object larger than the crop is never whole in it.
    assert not sc.train_coverage(ObjectSizes(np.array([[30.0, 101.0]]), np.array([[200, 300]])), crop).any()


# ----------------------------------------------------------------------------- plan + config
@pytest.fixture(scope="module")
def small_json(tmp_path_factory):
    """A few images of the small-object preset (its generator parameters, fewer images)."""
    root = str(tmp_path_factory.mktemp("small"))
    params = SYNTHETIC_PRESETS["synthetic_small"][2]
    return generate_split(root, "train", 24, seed=21, **params), os.path.join(root, "train")


def _run_tool(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        plan_scales.main(list(argv))
    return out.getvalue()


def test_plan_covers_small_objects(small_json):
    json_path, _ = small_json
    plan = json.loads(_run_tool("--config-file", QUICKSTART, "--dataset", json_path, "--json", "--objective", "coverage"))
    assert plan["coverage_before"]["train"] < 0.5
    assert plan["coverage_after"]["train"] >= 0.95 and plan["coverage_after"]["test"] >= 0.95
    ov = plan["overrides"]
    assert ov["INPUT.CROP.ENABLED"] and max(ov["INPUT.MIN_SIZE_TRAIN"]) <= ov["INPUT.MAX_SIZE_TRAIN"] == 480
    # The claimed coverage, recomputed by the naive loop on the planned setup.
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, QUICKSTART, [x for k, v in ov.items() for x in (k, str(v))])
    setup = scale_setup_from_config(cfg, strides=(8,))
    with open(json_path) as f:
        data = json.load(f)
    hw = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    train = [naive_train(a["bbox"][2], a["bbox"][3], *hw[a["image_id"]], setup) for a in anns]
    test = [naive_test(a["bbox"][2], a["bbox"][3], *hw[a["image_id"]], setup) for a in anns]
    assert np.mean(train) == pytest.approx(plan["coverage_after"]["train"])
    assert np.mean(test) == pytest.approx(plan["coverage_after"]["test"])


def test_planned_yaml_merges_and_trains_one_step(small_json, tmp_path):
    json_path, image_root = small_json
    out = tmp_path / "cfg" / "planned.yaml"
    _run_tool("--config-file", QUICKSTART, "--dataset", json_path, "--output", str(out), "--objective", "coverage")
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, str(out))  # _BASE_ resolves relative to the file
    assert cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute"
    assert cfg.SOLVER.BASE_LR == 0.003  # the quick start's values come through _BASE_
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    np.random.seed(0)  # detectron2's RandomCrop draws from np.random
    records = load_coco_json(json_path, image_root)
    mapper = InstanceFCNDatasetMapper(cfg, True)
    # Crops cut objects or leave them out entirely: every image still maps.
    assert all(mapper(d) is not None for d in records)
    inp = mapper(next(d for d in records if len(d["annotations"]) >= 3))
    h, w = inp["image"].shape[1:]
    assert min(h, w) in cfg.INPUT.MIN_SIZE_TRAIN and max(h, w) == min(h, w)  # square crop, resized
    model = build_model(cfg).train()
    losses = model([inp])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    before = model.instance_branch.score_maps.weight.detach().clone()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01).step()
    assert not torch.equal(before, model.instance_branch.score_maps.weight)


# ----------------------------------------------------------------------------- pre-flight warning
def _boxes_dataset(tmp_path, name, sizes):
    """Registered COCO dataset of 120x160 images with square objects of the given sizes."""
    img_dir = tmp_path / name
    img_dir.mkdir()
    images, anns = [], []
    for i, s in enumerate(sizes):
        cv2.imwrite(str(img_dir / f"{i}.png"), np.zeros((120, 160, 3), np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 120, "width": 160})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, s, s], "area": s * s,
                     "iscrowd": 0})
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "object"}]}))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, str(path), str(img_dir))


def _check(name, caplog):
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, QUICKSTART, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.WEIGHTS", ""])
    log = logging.getLogger("instancefcn_d2.scale_coverage")
    log.addHandler(caplog.handler)  # whether or not a test before set propagate off
    try:
        with caplog.at_level(logging.INFO, logger="instancefcn_d2.scale_coverage"):
            check_config(cfg, config_file="my.yaml")
    finally:
        log.removeHandler(caplog.handler)
    # (a record reaches caplog twice when the logger also propagates)
    return list({id(r): r for r in caplog.records if r.name == "instancefcn_d2.scale_coverage"}.values())


def test_preflight_warns_and_names_the_sizes(tmp_path, caplog):
    # Quick-start scales magnify 120-px-short images at most x2.67: 12-20 px objects reach at
    # most 53 px, under the 81 px the windows need; the 36-px ones make it (x2.67 -> 96).
    _boxes_dataset(tmp_path, "scalecov_small", [12, 14, 16, 20, 36])
    records = _check("scalecov_small", caplog)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in records]
    msg = warnings[0]
    assert "only 20.0%" in msg and "too small: 4 of 12-20 px" in msg
    assert "python tools/plan_scales.py --config-file my.yaml --dataset scalecov_small" in msg


def test_preflight_quiet_when_covered(tmp_path, caplog):
    _boxes_dataset(tmp_path, "scalecov_ok", [36, 40, 60, 90, 100])
    records = _check("scalecov_ok", caplog)
    assert [r for r in records if r.levelno == logging.INFO and "100.0% are positive" in r.getMessage()]
    assert not [r for r in records if r.levelno >= logging.WARNING]


def test_in_features_accessor():
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    assert in_features(cfg) == ["conv5"]
    cfg.MODEL.INSTANCEFCN.IN_FEATURES = ["p3", "p4"]  # the level-based config key
    assert in_features(cfg) == ["p3", "p4"]
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    assert scale_setup_from_config(cfg).strides == (8, 16)
