"""``INPUT.CROP.AROUND_OBJECT``: the training crop holds a random object (whole where it fits,
else its centre), through the dataset mapper as training builds it; the origin rules against a
brute-force enumeration."""
import os
import sys

import cv2
import numpy as np
import pytest

import instancefcn_d2  # noqa: F401
from detectron2.structures import BoxMode
from detectron2.utils.env import seed_all_rng

from instancefcn_d2 import InstanceFCNDatasetMapper
from instancefcn_d2.data.object_crop import box_origin_range, crop_origin_range

CROP = 32
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # tools.peers


@pytest.mark.parametrize("crop,size", [(32, 100), (100, 100), (7, 9), (1, 5)])
def test_crop_origin_range_is_every_origin_that_holds_the_centre(crop, size):
    for center in [*np.arange(0, size, 0.25), size - 1e-3]:
        brute = [o for o in range(0, size - crop + 1) if o <= center < o + crop]
        lo, hi = crop_origin_range(center, crop, size)
        assert list(range(lo, hi + 1)) == brute, center


@pytest.mark.parametrize("crop,size", [(32, 100), (12, 40), (7, 9), (1, 5)])
def test_box_origin_range_is_every_origin_that_holds_the_whole_box(crop, size):
    for low in np.arange(0, size, 0.5):
        for length in (0.0, 0.5, 3.0, crop - 0.5, crop, crop + 0.5):
            high = low + length
            brute = [o for o in range(0, size - crop + 1) if o <= low and high <= o + crop]
            lo, hi = box_origin_range(low, high, crop, size)
            assert list(range(lo, hi + 1)) == brute, (low, high)


def _record(tmp_path, boxes):
    """A 256 x 320 image with a square object per XYXY box (its polygon and box)."""
    path = tmp_path / "sparse.png"
    cv2.imwrite(str(path), np.random.RandomState(0).randint(0, 256, (256, 320, 3), np.uint8))
    annos = [{"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
              "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]} for x0, y0, x1, y1 in boxes]
    return {"file_name": str(path), "height": 256, "width": 320, "image_id": 1, "annotations": annos}


def _mapper(project_cfg, around, peer=False):
    """The project's training mapper, or (``peer``) the one the peer comparison gives detectron2's
    Mask R-CNN, so that both sides of that comparison crop the same way."""
    from tools.peers.training import ClassAgnosticDatasetMapper

    opts = ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", f"({CROP}, {CROP})",
            "INPUT.MIN_SIZE_TRAIN", f"({CROP},)", "INPUT.MAX_SIZE_TRAIN", str(CROP),
            "INPUT.CROP.AROUND_OBJECT", str(around), "INPUT.RANDOM_FLIP", "none"]
    if peer:
        return ClassAgnosticDatasetMapper(project_cfg("configs/peers/MaskRCNN-VGG16-FPN-synthetic.yaml", opts), True)
    return InstanceFCNDatasetMapper(project_cfg(opts=opts), True)


@pytest.mark.parametrize("peer", [False, True], ids=["instancefcn", "peer"])
def test_crop_around_object_holds_an_object_of_a_sparse_image(project_cfg, tmp_path, peer):
    # two 12-px objects far apart in a large empty field
    record = _record(tmp_path, [(10, 20, 22, 32), (290, 220, 302, 232)])
    seed_all_rng(0)
    placed = [_mapper(project_cfg, True, peer)(dict(record)) for _ in range(40)]
    seed_all_rng(0)
    anywhere = [_mapper(project_cfg, False, peer)(dict(record)) for _ in range(40)]
    for out in placed + anywhere:
        assert tuple(out["image"].shape[1:]) == (CROP, CROP)
    # every placed crop holds a whole 12 x 12 object (the crop is 32 px), not only part of one
    sides = [round(float(out["instances"].gt_boxes.area().max()) ** 0.5) if len(out["instances"]) else 0
             for out in placed]
    assert sides == [12] * len(placed)
    # the plain random crop is empty most of the time on this image (why the option exists)
    assert sum(len(out["instances"]) > 0 for out in anywhere) < 10


def test_crop_around_object_without_objects_is_the_plain_crop(project_cfg, tmp_path):
    record = _record(tmp_path, [])
    seed_all_rng(0)
    out = _mapper(project_cfg, True)(dict(record))
    assert tuple(out["image"].shape[1:]) == (CROP, CROP) and len(out["instances"]) == 0


def test_crop_around_object_longer_than_the_crop_holds_its_centre(project_cfg, tmp_path):
    # a 60 x 8 object in a 32-px crop: whole across, its centre along
    record = _record(tmp_path, [(100, 120, 160, 128)])
    seed_all_rng(0)
    for _ in range(10):
        boxes = _mapper(project_cfg, True)(dict(record))["instances"].gt_boxes.tensor
        assert len(boxes) == 1
        x0, y0, x1, y1 = boxes[0].tolist()
        assert (x0, x1) == (0, CROP) and y1 - y0 == 8
