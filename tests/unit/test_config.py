"""instancefcn_d2/config.py: add_instancefcn_config only adds keys; every shipped YAML builds
through get_project_cfg; the weights check of train_net and tools/demo.py."""
import glob
import logging
import os

import pytest

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
from detectron2.config import get_cfg

from instancefcn_d2 import add_instancefcn_config
from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.engine import check_weights

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROJECT_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if os.path.basename(p).startswith("InstanceFCN-")
)


def _flat(cfg, prefix=""):
    for k, v in cfg.items():
        if hasattr(v, "items"):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


OPEN_WORLD_KEYS = {"DATASETS.TRAIN_CATEGORY_IDS", "DATASETS.TRAIN_UNSEEN_AS", "TEST.PROPOSAL_EVAL_CATEGORY_IDS",
                   "TEST.PROPOSAL_BUDGET_RULE"}


def test_add_instancefcn_config_only_adds_keys():
    d2 = dict(_flat(get_cfg()))
    ours = get_cfg()
    add_instancefcn_config(ours)
    ours = dict(_flat(ours))
    changed = {k: (d2[k], ours[k]) for k in d2 if ours[k] != d2[k]}
    assert not changed, f"Detectron2 defaults overridden in code (set them in a YAML): {changed}"
    added = set(ours) - set(d2)
    beside_d2 = OPEN_WORLD_KEYS | {"INPUT.CROP.AROUND_OBJECT"}  # next to the detectron2 keys they extend
    assert added and all(k.startswith(("MODEL.INSTANCEFCN.", "MODEL.VGG.")) for k in added if k not in beside_d2)
    assert OPEN_WORLD_KEYS <= added  # detectron2-style names beside DATASETS.TRAIN / TEST (docs/open_world.md)


@pytest.mark.parametrize("path", PROJECT_CONFIGS, ids=os.path.basename)
def test_every_model_config_builds_and_sets_its_input_recipe(path):
    cfg = get_project_cfg(path)
    assert cfg.MODEL.META_ARCHITECTURE == "InstanceFCN"
    # the values add_instancefcn_config used to override now come from the YAMLs
    assert cfg.INPUT.MIN_SIZE_TEST == 0 and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert list(cfg.MODEL.PIXEL_STD) in ([1.0, 1.0, 1.0], [57.375, 57.12, 58.395])
    assert len(PROJECT_CONFIGS) >= 8


def test_check_weights_for_inference(tmp_path, caplog):
    cfg = get_project_cfg(os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml"), ["MODEL.WEIGHTS", ""])
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        check_weights(cfg, inference=True)  # a random model runs, with a warning
    assert "randomly initialised" in caplog.text
    check_weights(cfg)  # training from scratch: nothing to say
    cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match=r"does not exist\. Point it at a trained model"):
        check_weights(cfg, inference=True)
    with pytest.raises(FileNotFoundError, match=r"does not exist\. For the ImageNet VGG-16 start run"):
        check_weights(cfg)
