"""The synthetic dataset generator: determinism, pixel-exact annotations, detectron2 loading."""
import json
import os

import instancefcn_d2  # noqa: F401  (compat shims before any detectron2 import)

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from instancefcn_d2 import data as D
from instancefcn_d2.data import synthetic as S

SMALL = dict(min_size=96, max_size=128)
# pycocotools' decode trips a numpy-2 DeprecationWarning (its copy=False); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load(json_path):
    with open(json_path) as f:
        return json.load(f)


def _decode(ann, h, w):
    rles = mask_util.frPyObjects(ann["segmentation"], h, w)
    return mask_util.decode(mask_util.merge(rles) if isinstance(rles, list) else rles)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """30 small images; with the default quotas that is 2 empty and 3 crowd images."""
    root = str(tmp_path_factory.mktemp("synthetic"))
    json_path = D.generate_split(root, "train", 30, seed=5, **SMALL)
    return root, _load(json_path)


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    for root, seed in ((a, 11), (b, 11), (c, 12)):
        D.generate_split(root, "val", 4, seed, **SMALL)
    ja, jb, jc = (open(os.path.join(r, "val.json"), "rb").read() for r in (a, b, c))
    assert ja == jb
    assert ja != jc
    names = sorted(os.listdir(os.path.join(a, "val")))
    assert names == sorted(os.listdir(os.path.join(b, "val"))) and len(names) == 4
    for name in names:
        pa = cv2.imread(os.path.join(a, "val", name), cv2.IMREAD_UNCHANGED)
        pb = cv2.imread(os.path.join(b, "val", name), cv2.IMREAD_UNCHANGED)
        pc = cv2.imread(os.path.join(c, "val", name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(pa, pb)
        assert pa.shape != pc.shape or not np.array_equal(pa, pc)


def test_image_files_and_sizes(split):
    root, data = split
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    for img in data["images"]:
        pixels = cv2.imread(os.path.join(root, "train", img["file_name"]))
        assert pixels.shape == (img["height"], img["width"], 3)
        assert 96 <= min(pixels.shape[:2]) <= 128
        assert max(pixels.shape[:2]) <= 1.34 * min(pixels.shape[:2])
        assert pixels.std() > 5  # textured, not flat


def test_annotations_match_pixels(split):
    _, data = split
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    per_image = {}
    for ann in data["annotations"]:
        h, w = sizes[ann["image_id"]]
        if ann["iscrowd"]:
            assert isinstance(ann["segmentation"], dict)
        else:
            polys = ann["segmentation"]
            assert polys and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        m = _decode(ann, h, w)
        assert abs(int(m.sum()) - ann["area"]) <= 0.01 * ann["area"]
        ys, xs = np.nonzero(m)
        extent = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert np.abs(np.array(extent) - np.array(ann["bbox"])).max() <= 1
        assert ann["category_id"] in ((5,) if ann["iscrowd"] else (1, 2, 3, 4))
        per_image.setdefault(ann["image_id"], []).append((m, ann["iscrowd"]))

    touching = 0
    kernel = np.ones((3, 3), np.uint8)
    for masks in per_image.values():
        stack = np.stack([m for m, _ in masks])
        assert stack.sum(0).max() <= 1, "visible regions of two instances overlap"
        plain = [m for m, crowd in masks if not crowd]
        for i, m in enumerate(plain):
            grown = cv2.dilate(m, kernel) > 0
            touching += sum(bool(np.any(grown & (o > 0))) for o in plain[i + 1 :])
    assert touching >= 5


def test_categories_are_shape_kinds(split):
    """Kinds 1..4 (ellipse, rectangle, polygon, star), crowd clumps 5. Stars are the only
    non-convex kind: their masks fill far less of their convex hull than the other kinds' do
    (medians, so that the few occluded objects do not decide it)."""
    _, data = split
    assert [(c["id"], c["name"]) for c in data["categories"]] == [
        (1, "ellipse"), (2, "rectangle"), (3, "polygon"), (4, "star"), (5, "blob_clump")]
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    by_image = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    solidity = {1: [], 2: [], 3: [], 4: []}
    for image_id, anns in by_image.items():
        h, w = sizes[image_id]
        for a in anns:
            m = _decode(a, h, w)
            if a["iscrowd"] or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
                continue  # cut by the image border
            hull = cv2.convexHull(np.argwhere(m)[:, ::-1].astype(np.int32))
            hull_mask = cv2.fillPoly(np.zeros(m.shape, np.uint8), [hull], 1)
            solidity[a["category_id"]].append(m.sum() / hull_mask.sum())
    assert all(solidity.values()), {k: len(v) for k, v in solidity.items()}
    assert np.median(solidity[4]) < 0.8 < min(np.median(solidity[k]) for k in (1, 2, 3))
    assert sum(a["category_id"] == 5 for a in data["annotations"]) == 3


def test_crowd_and_empty_images_present(split):
    _, data = split
    crowd_images = {a["image_id"] for a in data["annotations"] if a["iscrowd"]}
    annotated = {a["image_id"] for a in data["annotations"]}
    empty = [img for img in data["images"] if img["id"] not in annotated]
    assert len(crowd_images) == 3
    assert sum(a["iscrowd"] for a in data["annotations"]) == 3  # one clump per crowd image
    assert len(empty) == 2
    assert len(data["annotations"]) > 3 * len(data["images"])


def test_uncompressed_rle_round_trip():
    rng = np.random.default_rng(0)
    for first in (0, 1):
        mask = (rng.random((7, 5)) < 0.5).astype(np.uint8)
        mask[0, 0] = first
        rle = S._uncompressed_rle(mask)
        assert np.array_equal(mask_util.decode(mask_util.frPyObjects(rle, 7, 5)), mask)


def test_ensure_dataset_skips_when_up_to_date(tmp_path):
    root = str(tmp_path / "ds")
    splits = {"train": (3, 1), "val": (2, 2)}
    assert D.ensure_dataset(root, splits, **SMALL) == ["train", "val"]
    json_path, _ = D.split_paths(root, "train")
    mtime = os.stat(json_path).st_mtime_ns
    assert D.ensure_dataset(root, splits, **SMALL) == []
    assert os.stat(json_path).st_mtime_ns == mtime
    # A changed split is regenerated on its own.
    assert D.ensure_dataset(root, {"train": (3, 1), "val": (3, 2)}, **SMALL) == ["val"]
    assert os.stat(json_path).st_mtime_ns == mtime
    # So is one whose files went missing.
    os.remove(json_path)
    assert D.ensure_dataset(root, {"train": (3, 1), "val": (3, 2)}, **SMALL) == ["train"]


def test_register_and_load_through_detectron2(tmp_path):
    from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detectron2.structures import BoxMode, PolygonMasks

    names = ("_test_synthetic_train", "_test_synthetic_val")
    root = str(tmp_path / "ds")
    splits = {"train": (6, 3), "val": (2, 4)}
    try:
        assert D.register_synthetic(root, names, splits, **SMALL) == names
        D.register_synthetic(root, names, splits, **SMALL)  # idempotent
        dicts = DatasetCatalog.get(names[0])
        assert len(dicts) == 6 and len(DatasetCatalog.get(names[1])) == 2
        meta = MetadataCatalog.get(names[0])
        assert meta.thing_classes == ["ellipse", "rectangle", "polygon", "star", "blob_clump"]
        assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
        anns = [a for d in dicts for a in d["annotations"]]
        assert anns and all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in anns)
        assert {a["category_id"] for a in anns if a.get("iscrowd", 0)} == {4}
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        assert len(crowd) == 1 and isinstance(crowd[0]["segmentation"], dict)
        assert all(isinstance(a["segmentation"], list) for a in anns if not a.get("iscrowd", 0))

        # Detectron2's default mapper drops crowd regions and keeps polygons as such.
        mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR",
                               use_instance_mask=True, instance_mask_format="polygon")
        d = next(d for d in dicts if any(a.get("iscrowd", 0) for a in d["annotations"]))
        out = mapper(d)
        n_plain = sum(1 for a in d["annotations"] if not a.get("iscrowd", 0))
        assert out["image"].shape[1:] == (d["height"], d["width"])
        assert len(out["instances"]) == n_plain
        assert isinstance(out["instances"].gt_masks, PolygonMasks)
    finally:
        for name in names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
