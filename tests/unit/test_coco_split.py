"""The paper's COCO test set: the first 5000 images of instances_val2014.json in file order
(instancefcn_d2/data/datasets.py), on a hand-built JSON whose file order is not id order."""
import json
import os

import pytest

import instancefcn_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog

from instancefcn_d2.data.datasets import first_images_in_file_order, register_project_datasets

NAME = "coco_2014_val_first5k"


def _write_coco(path, ids):
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 10, "width": 10} for i in ids]
    anns = [{"id": k + 1, "image_id": i, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0,
             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]} for k, i in enumerate(ids)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}, f)


def test_first_images_follow_the_file_order_not_the_ids(tmp_path):
    ids = [42, 7, 99, 3, 15]
    _write_coco(tmp_path / "a.json", ids)
    dicts = first_images_in_file_order(str(tmp_path / "a.json"), str(tmp_path), "t", 3)
    assert [d["image_id"] for d in dicts] == [42, 7, 99]
    assert dicts[0]["file_name"] == os.path.join(str(tmp_path), "000042.jpg")


def test_registration_under_detectron2_datasets_and_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="instances_val2014.json"):
        register_project_datasets(names=[NAME])
    os.makedirs(tmp_path / "coco" / "annotations")
    _write_coco(tmp_path / "coco" / "annotations" / "instances_val2014.json", [5, 1, 3])
    try:
        register_project_datasets(names=[NAME])
        assert [d["image_id"] for d in DatasetCatalog.get(NAME)] == [5, 1, 3]  # all, when fewer than 5000
        assert MetadataCatalog.get(NAME).json_file.endswith("instances_val2014.json")
    finally:
        DatasetCatalog.remove(NAME)
        MetadataCatalog.remove(NAME)


def test_paper_config_uses_the_papers_split():
    from instancefcn_d2.config import get_project_cfg

    cfg = get_project_cfg(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "configs", "InstanceFCN-VGG16-COCO.yaml"))
    assert tuple(cfg.DATASETS.TRAIN) == ("coco_2014_train",) and tuple(cfg.DATASETS.TEST) == (NAME,)
    assert cfg.MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION == "window"
