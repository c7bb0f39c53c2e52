"""The peers' learning-rate sweep chooses on a split held out of the training set
(tools/peers/holdout.py): the last images, scored against their own ground truth only."""
import json
import os
import sys

import cv2
import numpy as np
import pytest

import instancefcn_d2  # noqa: F401  (detectron2 shims first)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from instancefcn_d2.evaluation.segment_proposals import load_coco_gt  # noqa: E402
from tools.peers.holdout import register_holdout_split  # noqa: E402


@pytest.fixture
def coco_train(tmp_path):
    """A registered COCO JSON of 7 images, image ``i`` holding ``i`` square objects."""
    ids = list(range(1, 8))
    images = [{"id": i, "file_name": f"{i}.png", "height": 32, "width": 40} for i in ids]
    anns = [{"id": 100 * i + k, "image_id": i, "category_id": 5, "bbox": [4 * k, 2, 3, 3], "area": 9, "iscrowd": 0,
             "segmentation": [[4 * k, 2, 4 * k + 3, 2, 4 * k + 3, 5, 4 * k, 5]]} for i in ids for k in range(i)]
    with open(tmp_path / "train.json", "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 5, "name": "cell"}]}, f)
    for i in ids:
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((32, 40, 3), np.uint8))
    names = ["holdout_test_train", "holdout_test_train__sweep_fit", "holdout_test_train__sweep_holdout"]
    register_coco_instances(names[0], {}, str(tmp_path / "train.json"), str(tmp_path))
    yield names[0]
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_the_last_images_are_held_out_with_their_own_ground_truth(coco_train):
    fit, holdout, n_fit, n_holdout = register_holdout_split(coco_train, 0.3)
    whole = [d["image_id"] for d in DatasetCatalog.get(coco_train)]
    assert (n_fit, n_holdout) == (5, 2)  # round(0.3 * 7)
    assert [d["image_id"] for d in DatasetCatalog.get(fit)] == whole[:5]
    assert [d["image_id"] for d in DatasetCatalog.get(holdout)] == whole[5:]
    # scored against the held-out images alone, not the whole training file
    gt = load_coco_gt(holdout)
    assert sorted(gt.getImgIds()) == [6, 7] and len(gt.getAnnIds()) == 6 + 7
    assert len(load_coco_gt(fit).getAnnIds()) == sum(range(1, 6))


def test_every_split_keeps_an_image_on_each_side(coco_train):
    assert register_holdout_split(coco_train, 0.01)[2:] == (6, 1)
    assert register_holdout_split(coco_train, 0.99)[2:] == (1, 6)
    with pytest.raises(ValueError, match="fraction"):
        register_holdout_split(coco_train, 1.0)
