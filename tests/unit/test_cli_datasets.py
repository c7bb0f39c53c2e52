"""``--dataset NAME=annotations.json:images_dir`` (instancefcn_d2/data/cli_datasets.py): parsing,
the checks that run before anything is registered, and registration for DATASETS.TRAIN / TEST."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest

import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims first)
from instancefcn_d2.data.cli_datasets import (
    CocoDatasetArg, DatasetArgumentError, check_coco_dataset, parse_dataset_arg,
    register_dataset_args)
from instancefcn_d2.data.datasets import project_dataset_names

from detectron2.data import DatasetCatalog, MetadataCatalog


def _rle(h, w):
    m = np.zeros((h, w), np.uint8, order="F")
    m[2:6, 3:9] = 1
    r = mask_util.encode(m)
    return {"size": [h, w], "counts": r["counts"].decode()}


def _write_set(root, n_images=2, segmentation="rle", images_on_disk=None):
    images_dir = root / "imgs"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        name = f"sub/im{i}.png"
        images.append({"id": i + 1, "file_name": name, "height": 16, "width": 20})
        if images_on_disk is None or i in images_on_disk:
            (images_dir / "sub").mkdir(exist_ok=True)
            (images_dir / name).write_bytes(b"png")
        seg = _rle(16, 20) if segmentation == "rle" else segmentation
        ann = {"id": i + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0, "bbox": [3, 2, 6, 4], "area": 24}
        if seg is not None:
            ann["segmentation"] = seg
        anns.append(ann)
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "cell"}]}))
    return path, images_dir


@pytest.fixture
def unregister():
    names = []
    yield names
    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_parse_splits_at_the_json_suffix():
    assert parse_dataset_arg("a=x/y.json:imgs") == CocoDatasetArg("a", "x/y.json", "imgs")
    # the folder may contain ':' and the JSON may be upper-case .JSON
    assert parse_dataset_arg("b=/d/A.JSON:/data/c:d") == CocoDatasetArg("b", "/d/A.JSON", "/data/c:d")
    for bad in ["noequals.json:imgs", "=a.json:imgs", "a=a.json", "a=a.json:", "a=a.txt:imgs", "a b=a.json:i"]:
        with pytest.raises(DatasetArgumentError, match="--dataset"):
            parse_dataset_arg(bad)


def test_registers_a_valid_set_for_the_config(tmp_path, unregister):
    path, images = _write_set(tmp_path)
    unregister.append("clitest_ok")
    names = register_dataset_args([f"clitest_ok={path}:{images}"], reserved=project_dataset_names())
    assert names == ["clitest_ok"]
    dicts = DatasetCatalog.get("clitest_ok")
    assert [d["file_name"] for d in dicts] == [str(images / "sub/im0.png"), str(images / "sub/im1.png")]
    assert dicts[0]["annotations"][0]["segmentation"]["size"] == [16, 20]
    # the same files again (a second setup() in one process) is no error; other files under the name are
    assert register_dataset_args([f"clitest_ok={path}:{images}"]) == ["clitest_ok"]
    with pytest.raises(DatasetArgumentError, match="already a registered dataset"):
        register_dataset_args([f"clitest_ok={path}:{tmp_path}"])


@pytest.mark.parametrize("case, match", [
    ("missing_json", "annotation file .* not found"),
    ("missing_dir", "image folder .* not found"),
    ("missing_image", r"1 of 3 images .* are not in .*sub/im1.png"),
    ("no_segmentation", "2 of 2 annotations have no mask"),
    ("empty_polygons", "have no mask"),
    ("empty_rle", "have no mask"),
    ("not_coco", "not a COCO instances file"),
    ("not_json", "not valid JSON"),
    ("unknown_category", "category ids 3 not in 'categories'"),
])
def test_bad_input_fails_before_registering_anything(tmp_path, unregister, case, match):
    good_path, good_images = _write_set(tmp_path / "good")
    kw = {"no_segmentation": {"segmentation": None}, "empty_polygons": {"segmentation": [[]]},
          "empty_rle": {"segmentation": {"size": [16, 20], "counts": ""}},
          "missing_image": {"n_images": 3, "images_on_disk": {0, 2}}}.get(case, {})
    path, images = _write_set(tmp_path / "bad", **kw)
    if case == "missing_json":
        path = tmp_path / "nope.json"
    elif case == "missing_dir":
        images = tmp_path / "nope"
    elif case == "not_coco":
        path.write_text(json.dumps({"images": []}))
    elif case == "not_json":
        path.write_text("{oops")
    elif case == "unknown_category":
        data = json.loads(path.read_text())
        data["annotations"][0]["category_id"] = 3
        path.write_text(json.dumps(data))
    unregister += ["clitest_good", "clitest_bad"]
    with pytest.raises(DatasetArgumentError, match=match):
        # the good one comes first and is still not registered: all or nothing
        register_dataset_args([f"clitest_good={good_path}:{good_images}", f"clitest_bad={path}:{images}"])
    assert "clitest_good" not in DatasetCatalog.list() and "clitest_bad" not in DatasetCatalog.list()


def test_crowd_annotations_may_lack_masks(tmp_path):
    path, images = _write_set(tmp_path, segmentation=None)
    data = json.loads(path.read_text())
    for a in data["annotations"]:
        a["iscrowd"] = 1
    path.write_text(json.dumps(data))
    assert check_coco_dataset(CocoDatasetArg("x", str(path), str(images))) == {"images": 2, "annotations": 2}


@pytest.mark.parametrize("name, match", [("coco_2017_val", "already a registered dataset"),
                                         ("hela_train", "one of this project's datasets")])
def test_name_clashes(tmp_path, name, match):
    path, images = _write_set(tmp_path)
    with pytest.raises(DatasetArgumentError, match=match):
        register_dataset_args([f"{name}={path}:{images}"], reserved=project_dataset_names())
    with pytest.raises(DatasetArgumentError, match="more than once"):
        register_dataset_args([f"twice={path}:{images}", f"twice={path}:{images}"])


def test_train_net_parser_fails_on_a_bad_dataset_before_any_work(tmp_path, train_net):
    """train_net's setup() registers --dataset before reading the config; a bad one raises
    there (before the output folder or the model exists)."""
    parser = train_net.module.argument_parser()
    args = parser.parse_args(["--dataset", "a=x.json:y", "--dataset", "b=z.json:w", "--eval-only"])
    assert args.dataset == ["a=x.json:y", "b=z.json:w"]
    out = tmp_path / "out"
    with pytest.raises(DatasetArgumentError, match=r"annotation file '.*x.json' not found"):
        train_net(["--dataset", f"a={tmp_path}/x.json:{tmp_path}", "--eval-only", "OUTPUT_DIR", str(out)])
    assert not out.exists()


def test_plan_scales_takes_the_same_argument(tmp_path, load_tool, capsys, unregister):
    tool = load_tool("plan_scales")
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml")
    with pytest.raises(SystemExit) as e:
        tool.main(["--config-file", config, "--dataset", f"clitest_plan={tmp_path}/nope.json:{tmp_path}"])
    assert e.value.code == 2 and "annotation file" in capsys.readouterr().err
    path, images = _write_set(tmp_path)
    unregister.append("clitest_plan")
    plan = tool.main(["--config-file", config, "--dataset", f"clitest_plan={path}:{images}", "--json"])
    assert "clitest_plan" in DatasetCatalog.list() and plan.objective.startswith("recall")
