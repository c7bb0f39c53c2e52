"""Every COCO config of the project runs through train_net.py on real COCO files (the ten
val2017 images of instancefcn_d2/data/coco_sample.py): a few training iterations at a reduced
input size with finite losses, then ``--eval-only`` with the trained weights, which prints the
AR table and writes proposal_ar.json and the proposal exports.

Overrides are for size, iterations, device, batch size, data-loader workers and weights that
cannot be reached here (detectron2's ImageNet ResNets: MODEL.WEIGHTS ""); everything else is
the config as a user runs it."""
import glob
import json
import math
import os
import pickle

import pytest

import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims before any detectron2 import)
from detectron2.data import DatasetCatalog

from instancefcn_d2.data import register_project_datasets
from instancefcn_d2.data.coco_sample import SPLITS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config -> (train dataset, test dataset, weights reachable here)
COCO_CONFIGS = {
    "configs/InstanceFCN-VGG16-COCO.yaml": ("coco_2014_train", "coco_2014_val_first5k", True),
    "configs/InstanceFCN-VGG16-COCO2017.yaml": ("coco_2017_train", "coco_2017_val", True),
    "configs/InstanceFCN-VGG16-FPN-COCO.yaml": ("coco_2017_train", "coco_2017_val", True),
    "configs/InstanceFCN-R50-FPN-COCO.yaml": ("coco_2017_train", "coco_2017_val", False),
    "configs/InstanceFCN-R101-FPN-COCO.yaml": ("coco_2017_train", "coco_2017_val", False),
    "configs/open_world/InstanceFCN-VGG16-COCO-VOC-to-nonVOC.yaml": ("coco_2017_train", "coco_2017_val", True),
    "configs/open_world/InstanceFCN-VGG16-FPN-COCO-VOC-to-nonVOC.yaml": ("coco_2017_train", "coco_2017_val", True),
    "configs/open_world/InstanceFCN-R50-FPN-COCO-VOC-to-nonVOC.yaml": ("coco_2017_train", "coco_2017_val", False),
}
# Shorter side 160 (longer <= 256) in training and the one test scale, with 100 windows per
# level or scale instead of 1000 at a tenth of the size; one image a batch.
TINY = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 1,
        "INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", 256, "MODEL.INSTANCEFCN.TEST_SCALES", "[160]",
        "MODEL.INSTANCEFCN.TEST_MAX_SIZE", 256, "MODEL.INSTANCEFCN.TOPK_PER_SCALE", 100, "SEED", 3]
ITERS = 2


def test_every_coco_config_is_listed():
    """A new COCO config cannot go untested: every config file reading COCO is in COCO_CONFIGS."""
    found = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*COCO*.yaml"),
                                                         recursive=True)}
    assert found == set(COCO_CONFIGS)


def test_sample_loads_as_detectron2_coco(coco_sample):
    """The layout under every name: 10 images whose files exist, COCO's polygons and its crowd
    region as load_coco_json reads them, the 2014 first-5k set in the JSON's file order."""
    with open(os.path.join(coco_sample, "coco", "annotations", "instances_val2017.json")) as f:
        raw = json.load(f)
    file_order = [im["id"] for im in raw["images"]]
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert len(file_order) == 10 and len(crowd) == 1
    for json_name, image_dir in SPLITS.items():
        with open(os.path.join(coco_sample, "coco", "annotations", json_name)) as f:
            assert json.load(f) == raw
        assert sorted(os.listdir(os.path.join(coco_sample, "coco", image_dir))) == sorted(
            im["file_name"] for im in raw["images"])
    register_project_datasets(names=["coco_2014_val_first5k"])
    for name in ("coco_2017_train", "coco_2017_val", "coco_2014_train", "coco_2014_val", "coco_2014_val_first5k"):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 10 and all(os.path.isfile(d["file_name"]) for d in dicts), name
        anns = [a for d in dicts for a in d["annotations"]]
        assert len(anns) == len(raw["annotations"])
        assert sum(a["iscrowd"] for a in anns) == 1
        assert all(isinstance(a["segmentation"], list) for a in anns if not a["iscrowd"])  # polygons
    assert [d["image_id"] for d in DatasetCatalog.get("coco_2014_val_first5k")] == file_order
    assert [d["image_id"] for d in DatasetCatalog.get("coco_2017_val")] == sorted(file_order)


def _losses(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "loss_mask" in r]


@pytest.mark.parametrize("config_file", list(COCO_CONFIGS))
def test_coco_config_trains_and_evaluates(train_net, coco_sample, tmp_path, config_file):
    train, test, weights_reachable = COCO_CONFIGS[config_file]
    out = tmp_path / "out"
    weights = [] if weights_reachable else ["MODEL.WEIGHTS", ""]
    train_net(["--config-file", os.path.join(REPO, config_file), *TINY, *weights,
               "SOLVER.MAX_ITER", ITERS, "SOLVER.CHECKPOINT_PERIOD", 1000, "OUTPUT_DIR", out])
    cfg_used = (out / "config.yaml").read_text()
    assert train in cfg_used and test in cfg_used
    rows = _losses(out)
    assert rows and rows[-1]["iteration"] == ITERS - 1
    assert all(math.isfinite(r[k]) for r in rows for k in ("loss_objectness", "loss_mask", "total_loss"))

    res = train_net(["--eval-only", "--config-file", os.path.join(REPO, config_file), *TINY,
                     "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", out])
    assert set(res) >= {"segm_proposals", "box_proposals"}
    assert all(0.0 <= v <= 100.0 for task in ("segm_proposals", "box_proposals")
               for v in res[task].values() if v is not None)
    with open(out / "proposal_ar.json") as f:
        assert json.load(f)["segm_proposals"] == res["segm_proposals"]
    log = (out / "log.txt").read_text()
    assert f"Class-agnostic proposal AR (%) on '{test}', 10 images" in log
    exports = out / "inference" / test
    with open(exports / "segment_proposals_coco.json") as f:
        segments = json.load(f)
    with open(exports / "box_proposals.pkl", "rb") as f:
        boxes = pickle.load(f)
    ids = {d["image_id"] for d in DatasetCatalog.get(test)}
    assert {s["image_id"] for s in segments} <= ids and set(boxes["ids"]) == ids
    # A ResNet from a random start (frozen BN of random weights: unnormalised features) may
    # propose nothing after two steps; from the ImageNet VGG-16 there are proposals.
    assert segments or not weights_reachable


def test_preflight_names_the_small_objects_no_level_learns(project_cfg, coco_sample, caplog):
    """On COCO at the R50-FPN recipe (shorter side 640-800, longer <= 1333, p2-p6), objects whose
    longer side stays under the smallest positive size (p2's canonical 48 px / 2^0.5) even at
    the largest scale are positive on no level: the pre-flight warning gives their fraction and
    that size. The fraction is counted here from the annotation file, independently."""
    import logging

    from instancefcn_d2.engine import check_config

    cfg = project_cfg("configs/InstanceFCN-R50-FPN-COCO.yaml", ["MODEL.DEVICE", "cpu"])
    c = cfg.MODEL.INSTANCEFCN
    smallest = c.CANONICAL_OBJECT_RATIO * c.WINDOW_SIZE * 4 * 2 ** -c.POSITIVE_SCALE_LOG2  # p2: stride 4
    with open(os.path.join(coco_sample, "coco", "annotations", "instances_train2017.json")) as f:
        raw = json.load(f)
    hw = {im["id"]: (im["height"], im["width"]) for im in raw["images"]}
    small = total = 0
    for a in raw["annotations"]:
        if a["iscrowd"]:
            continue
        h, w = hw[a["image_id"]]
        factor = min(max(cfg.INPUT.MIN_SIZE_TRAIN) / min(h, w), cfg.INPUT.MAX_SIZE_TRAIN / max(h, w))
        total += 1
        small += max(a["bbox"][2], a["bbox"][3]) * factor < smallest
    assert 0 < small < total

    log = logging.getLogger("instancefcn_d2.scale_coverage")
    log.addHandler(caplog.handler)  # whether or not train_net's logger set-up turned propagation off
    try:
        with caplog.at_level(logging.INFO, logger="instancefcn_d2.scale_coverage"):
            check_config(cfg, training=True)
    finally:
        log.removeHandler(caplog.handler)
    warnings = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
    assert len(warnings) == 1, warnings
    msg = warnings.pop()
    assert f"{100 * small / total:.1f}% of the objects of DATASETS.TRAIN ['coco_2017_train'] are positive on no level" in msg
    assert f"smallest positive size, {smallest:.0f} px" in msg
