"""The COCO and VOC configs, as train_net.setup uses them (register_project_datasets(cfg), then
check_config): with their files missing they fail before any work with an error that names the
file and where to put it; with the files present (a tiny hand-built set) every dataset loads."""
import json
import os

import cv2
import numpy as np
import pytest

import instancefcn_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from instancefcn_d2.data import register_project_datasets
from instancefcn_d2.engine import check_config

PROJECT_NAMES = ("coco_2014_val_first5k", "voc_2012_sbd_train", "voc_2012_sbd_val")


@pytest.fixture(autouse=True)
def unregister():
    """The project's names are registered from the environment of the moment: start and end clean."""
    def clear():
        for name in PROJECT_NAMES:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
    clear()
    yield
    clear()


def write_coco(json_path, image_dir, ids, categories=({"id": 1, "name": "thing"},)):
    """A COCO JSON with one square object (of the first category) per image, and the images
    (16x20 px) it names."""
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "height": 16, "width": 20} for i in ids]
    anns = [{"id": k + 1, "image_id": i, "category_id": categories[0]["id"], "bbox": [2, 2, 8, 8], "area": 64,
             "iscrowd": 0, "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]} for k, i in enumerate(ids)]
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": list(categories)}, f)
    for i in ids:
        cv2.imwrite(os.path.join(image_dir, f"{i:06d}.jpg"), np.full((16, 20, 3), 128, np.uint8))


def configured(project_cfg, config_file):
    cfg = project_cfg(config_file, ["MODEL.WEIGHTS", ""])
    register_project_datasets(cfg)
    return cfg


def test_voc_config_clear_error_then_registers(project_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        configured(project_cfg, "configs/InstanceFCN-VGG16-VOC.yaml")
    msg = str(e.value)
    assert "voc_2012_sbd_train" in msg and os.path.join(str(tmp_path), "voc_sbd", "train.json") in msg
    assert "README" in msg
    assert "voc_2012_sbd_train" not in DatasetCatalog.list()  # nothing half-registered

    root = tmp_path / "voc_sbd"
    write_coco(str(root / "train.json"), str(root / "JPEGImages"), [1, 2, 3])
    write_coco(str(root / "val.json"), str(root / "JPEGImages"), [4, 5])
    cfg = configured(project_cfg, "configs/InstanceFCN-VGG16-VOC.yaml")
    check_config(cfg, training=True)
    assert [d["image_id"] for d in DatasetCatalog.get("voc_2012_sbd_train")] == [1, 2, 3]
    val = DatasetCatalog.get("voc_2012_sbd_val")
    assert [d["image_id"] for d in val] == [4, 5] and len(val[0]["annotations"]) == 1
    assert val[0]["file_name"] == str(root / "JPEGImages" / "000004.jpg")


@pytest.mark.parametrize("config_file,train,test", [
    ("configs/InstanceFCN-VGG16-COCO.yaml", "coco_2014_train", "coco_2014_val_first5k"),
    ("configs/InstanceFCN-VGG16-COCO2017.yaml", "coco_2017_train", "coco_2017_val"),
])
def test_coco_configs_clear_error_then_register(project_cfg, tmp_path, monkeypatch, config_file, train, test):
    # detectron2 fixed its builtin COCO paths at import ($DETECTRON2_DATASETS, default the relative
    # "datasets"); run where those relative paths lead into tmp_path.
    builtin_json = MetadataCatalog.get(train).json_file
    if os.path.isabs(builtin_json):
        pytest.skip(f"detectron2's builtin {train} points at {builtin_json} ($DETECTRON2_DATASETS was set)")
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = project_cfg(config_file, ["MODEL.WEIGHTS", ""])
    assert tuple(cfg.DATASETS.TRAIN) == (train,) and tuple(cfg.DATASETS.TEST) == (test,)

    def setup():  # as train_net.setup: register the project's names, then check before any work
        register_project_datasets(cfg)
        check_config(cfg, training=True)

    # detectron2's builtin metadata holds COCO's 80 classes: the files must name the same ones.
    things = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
    coco = tmp_path / "datasets" / "coco"
    split = "2014" if "2014" in train else "2017"
    train_json, val_json = (coco / "annotations" / f"instances_{s}{split}.json" for s in ("train", "val"))
    write_coco(str(val_json), str(coco / f"val{split}"), [9, 7, 8], things)
    with pytest.raises(FileNotFoundError) as e:  # train JSON missing
        setup()
    msg = str(e.value)
    assert f"DATASETS.TRAIN: dataset '{train}'" in msg and builtin_json in msg and "$DETECTRON2_DATASETS" in msg
    os.remove(val_json)
    write_coco(str(train_json), str(coco / f"train{split}"), [3, 1, 2], things)
    with pytest.raises(FileNotFoundError) as e:  # val JSON missing
        setup()
    assert os.path.join("datasets", "coco", "annotations", f"instances_val{split}.json") in str(e.value)
    assert "$DETECTRON2_DATASETS" in str(e.value)

    write_coco(str(val_json), str(coco / f"val{split}"), [9, 7, 8], things)
    setup()  # every dataset now loads and every image file exists
    assert sorted(d["image_id"] for d in DatasetCatalog.get(train)) == [1, 2, 3]
    ids = [d["image_id"] for d in DatasetCatalog.get(test)]
    assert ids == ([9, 7, 8] if test.endswith("first5k") else [7, 8, 9])  # file order vs detectron2's id order
    assert os.path.isfile(DatasetCatalog.get(test)[0]["file_name"])
