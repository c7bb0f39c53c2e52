"""tools/demo.py and instancefcn_d2.visualize: overlays, COCO JSON export, broken inputs."""
import json
import logging
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (must precede detectron2 imports)
from instancefcn_d2.data import generate_split
from instancefcn_d2.visualize import draw_proposals, proposal_colors, side_by_side

import pycocotools.mask as mask_util
from detectron2.structures import Boxes, Instances

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml")
# Random init, one small scale, few windows: a couple of seconds per run on a CPU.
FAST_OPTS = ["MODEL.WEIGHTS", "", "MODEL.INSTANCEFCN.TEST_SCALES", "[96]",
             "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "50", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def demo(load_tool):
    return load_tool("demo")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Two tiny synthetic images plus a 0-byte 'broken.png'."""
    root = tmp_path_factory.mktemp("demo_data")
    generate_split(str(root), "imgs", 2, seed=5, min_size=96, max_size=128)
    folder = root / "imgs"
    (folder / "broken.png").write_bytes(b"")
    return folder


def _instances(masks, scores):
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    inst = Instances(tuple(masks.shape[1:]))
    inst.pred_masks = masks
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    inst.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    return inst


# ---------------------------------------------------------------------------- visualize
def test_draw_proposals_colours_each_mask_distinctly():
    h, w = 200, 240
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((3, h, w), bool)
    masks[0, 20:120, 20:120] = True  # best
    masks[1, 70:170, 90:190] = True  # overlaps the first
    masks[2, 150:195, 5:60] = True  # lowest score: beyond top_n=2
    out = draw_proposals(image, _instances(masks, [0.93, 0.61, 0.05]), top_n=2, min_side=0)
    assert out.shape == image.shape and out.dtype == np.uint8

    # Interiors away from edges, the overlap and the centred score label.
    only_a = out[25:40, 25:60].reshape(-1, 3).astype(int)
    only_b = out[150:165, 150:185].reshape(-1, 3).astype(int)
    assert (np.abs(only_a - 128).sum(1) > 30).all()
    assert (np.abs(only_b - 128).sum(1) > 30).all()
    colour_a, colour_b = np.median(only_a, 0), np.median(only_b, 0)
    assert np.abs(colour_a - colour_b).sum() > 60
    # Outside every drawn mask, and inside the proposal past top_n, the image is untouched.
    np.testing.assert_array_equal(out[2:15, 200:235], image[2:15, 200:235])
    np.testing.assert_array_equal(out[180:195, 8:18], image[180:195, 8:18])


def test_draw_proposals_without_proposals_returns_rgb_image():
    image = np.zeros((30, 40, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    out = draw_proposals(image, _instances(np.zeros((0, 30, 40)), []), min_side=0)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 2], 255)  # RGB out
    np.testing.assert_array_equal(out[..., :2], 0)
    # Empty masks are not drawn either.
    out = draw_proposals(image, _instances(np.zeros((2, 30, 40)), [0.9, 0.8]), min_side=0)
    np.testing.assert_array_equal(out, image[:, :, ::-1])


def test_proposal_colors_are_distinct():
    for n in (1, 20, 100):
        colours = np.round(np.asarray(proposal_colors(n)), 3)
        assert len(np.unique(colours, axis=0)) == n
    assert proposal_colors(5) == proposal_colors(30)[:5]  # a rank keeps its colour


def test_side_by_side_layout():
    a = np.full((50, 60, 3), 10, np.uint8)
    b = np.full((70, 40, 3), 200, np.uint8)
    out = side_by_side([a, b], ["k=1", "k=5"], gap=8, title_height=24)
    assert out.shape == (24 + 70, 60 + 8 + 40, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[24:74, :60], a)
    np.testing.assert_array_equal(out[24:94, 68:108], b)
    assert (out[:24, :60] < 128).any()  # the title was written
    assert (out[74:, :60] == 255).all()  # the shorter image is padded with the background


# ---------------------------------------------------------------------------- tools/demo.py
def test_demo_folder_overlays_json_and_broken_file(demo, image_dir, tmp_path, caplog):
    out_dir = tmp_path / "vis"
    json_path = tmp_path / "proposals.json"
    torch.manual_seed(0)  # random-init weights: the same proposals on every run
    with caplog.at_level(logging.INFO, logger="instancefcn_d2.demo"):
        rc = demo.main(["--config-file", CONFIG, "--input", str(image_dir), "--output", str(out_dir),
                        "--json", str(json_path), "--proposals-pkl", str(tmp_path / "boxes.pkl"),
                        "--min-side", "0", "--opts", *FAST_OPTS])  # own size: pixels compared below
    assert rc != 0  # broken.png failed
    assert "broken.png" in caplog.text and "skipped" in caplog.text

    good = sorted(p for p in os.listdir(image_dir) if p != "broken.png")
    assert len(good) == 2
    assert sorted(os.listdir(out_dir)) == good  # <stem>.png per readable image, none for broken

    records = json.loads(json_path.read_text())
    assert isinstance(records, list)
    by_file = {}
    for r in records:
        assert {"image_id", "category_id", "segmentation", "score", "bbox", "file_name"} <= set(r)
        by_file.setdefault(os.path.basename(r["file_name"]), []).append(r)
    # Every readable image got proposals (random weights still score every window).
    assert set(by_file) == set(good)

    checked = []
    for name in good:
        original = cv2.imread(str(image_dir / name))
        overlay = cv2.imread(str(out_dir / name))
        assert overlay is not None and overlay.shape == original.shape
        recs = by_file[name]
        assert len({r["image_id"] for r in recs}) == 1
        masks = mask_util.decode([r["segmentation"] for r in recs])  # (H, W, N)
        assert masks.shape == original.shape[:2] + (len(recs),)
        scores = [r["score"] for r in recs]
        assert all(0.0 <= s <= 1.0 for s in scores)
        # The drawn proposals (top 20 by score) changed the pixels they cover.
        top = np.argsort(scores)[::-1][:20]
        drawn = masks[:, :, top].any(axis=2)
        assert drawn.any(), name
        checked.append(name)
        changed = np.abs(overlay.astype(int) - original.astype(int)).sum(axis=2) > 0
        assert changed[drawn].mean() > 0.5
    assert checked == good
    print(f"{len(records)} proposals; overlay pixels checked on {checked}")

    # The box pickle holds the same proposals, per readable image, in detectron2's format.
    with open(tmp_path / "boxes.pkl", "rb") as f:
        pkl = pickle.load(f)
    assert len(pkl["ids"]) == len(good) and pkl["bbox_mode"] == 0
    for image_id, boxes, logits in zip(pkl["ids"], pkl["boxes"], pkl["objectness_logits"]):
        recs = [r for r in records if r["image_id"] == image_id]
        assert boxes.shape == (len(recs), 4) and logits.shape == (len(recs),)


def test_demo_cli_single_image_and_missing_input(demo, image_dir, tmp_path, caplog):
    """The entry point (argparse, exit status) on one image and a missing one. (The script as a
    command: test_quickstart_smoke runs ``python tools/demo.py``.)"""
    image = sorted(p for p in image_dir.iterdir() if p.name != "broken.png")[0]
    out_dir = tmp_path / "cli"
    rc = demo.main(["--config-file", CONFIG, "--input", str(image), str(tmp_path / "nope.png"),
                    "--output", str(out_dir), "--top-n", "5", "--opts", *FAST_OPTS])
    assert rc == 1
    assert any("nope.png" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    written = cv2.imread(str(out_dir / (image.stem + ".png")))
    h, w = cv2.imread(str(image)).shape[:2]  # 96-128 px: drawn enlarged to a 512-px shorter side
    s = 512 / min(h, w)
    assert written is not None and written.shape == (round(h * s), round(w * s), 3)


def test_demo_no_inputs(demo, tmp_path):
    rc = demo.main(["--config-file", CONFIG, "--input", str(tmp_path / "empty*.jpg"),
                    "--output", str(tmp_path / "o"), "--opts", *FAST_OPTS])
    assert rc == 2


def test_expand_inputs_and_output_names(demo, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.png").write_bytes(b"")
        (tmp_path / sub / "notes.txt").write_text("not an image")
    paths, missing = demo.expand_inputs([str(tmp_path / "a"), str(tmp_path / "*" / "*.png"),
                                         str(tmp_path / "a" / "x.png"), str(tmp_path / "zzz")])
    assert [os.path.relpath(p, tmp_path) for p in paths] == [os.path.join("a", "x.png"), os.path.join("b", "x.png")]
    assert missing == [str(tmp_path / "zzz")]
    assert demo._output_names(paths) == ["x.png", "x_1.png"]
