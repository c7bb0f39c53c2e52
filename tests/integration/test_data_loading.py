"""Data loading with worker processes (DATALOADER.NUM_WORKERS >= 1), as training and evaluation
run it: a corrupt image met inside a worker is skipped in training (the worker logs it and the
loader carries on with other images) and is a clear error naming the file at test time."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.structures import BoxMode

from instancefcn_d2 import InstanceFCNDatasetMapper

NAME = "test_data_loading_workers"
OPTS = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", f"('{NAME}',)",
        "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "96", "SOLVER.IMS_PER_BATCH", "1",
        "DATALOADER.NUM_WORKERS", "1"]


@pytest.fixture
def dataset(tmp_path):
    """Three good 48x64 images with one square each, and a corrupt PNG between them."""
    records = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        if i == 2:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # PNG signature, garbage after
        else:
            assert cv2.imwrite(str(path), np.random.RandomState(i).randint(0, 256, (48, 64, 3), np.uint8))
        records.append({"file_name": str(path), "height": 48, "width": 64, "image_id": i + 1, "annotations": [
            {"bbox": [8, 8, 24, 24], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
             "segmentation": [[8, 8, 32, 8, 32, 32, 8, 32]]}]})
    DatasetCatalog.register(NAME, lambda: [dict(r) for r in records])
    MetadataCatalog.get(NAME).set(thing_classes=["object"])
    yield records
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


@pytest.fixture
def worker_log(tmp_path):
    """The project's warnings, with the writing process id, in a file: a forked worker inherits
    the handler, and its records reach the file (pytest's caplog sees only this process)."""
    path = tmp_path / "log.txt"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(message)s"))
    logger = logging.getLogger("instancefcn_d2")
    logger.addHandler(handler)
    yield path
    logger.removeHandler(handler)
    handler.close()


def test_train_loader_worker_skips_the_corrupt_image(project_cfg, dataset, worker_log):
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml", OPTS)
    loader = build_detection_train_loader(cfg, mapper=InstanceFCNDatasetMapper(cfg, True),
                                          sampler=TrainingSampler(len(dataset), shuffle=True, seed=0))
    seen = []
    for _, batch in zip(range(12), loader):
        assert len(batch) == 1 and batch[0]["image"].dtype == torch.uint8 and len(batch[0]["instances"]) == 1
        seen.append(os.path.basename(batch[0]["file_name"]))
    # Twelve draws (each index three times, in seeded order): never the corrupt one, every good one.
    assert set(seen) == {"img0.png", "img1.png", "img3.png"}
    lines = [ln for ln in worker_log.read_text().splitlines() if "img2.png" in ln]
    assert lines and all("skipping it" in ln for ln in lines)
    assert all(int(ln.split()[0]) != os.getpid() for ln in lines)  # logged by the worker process


def test_test_loader_worker_names_the_corrupt_image(project_cfg, dataset):
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml", OPTS)
    assert cfg.DATALOADER.NUM_WORKERS == 1
    loader = build_detection_test_loader(cfg, NAME, mapper=InstanceFCNDatasetMapper(cfg, False))
    names = []
    with pytest.raises(ValueError, match=r"Cannot use image '.*img2.png'"):
        for batch in loader:
            names.append(os.path.basename(batch[0]["file_name"]))
    assert names == ["img0.png", "img1.png"]  # in order, up to the bad one
