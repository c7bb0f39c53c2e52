"""Bad inputs get a clear, early error or a correct result, never a deep traceback.

Config typos, weights files, dataset registration and files (checked by ``check_config``
before training), unreadable or odd images and malformed annotations (handled by
``InstanceFCNDatasetMapper``: skipped with a warning in training, a clear error at test time),
edge-case image sizes and ids (model and evaluator), and NaN losses (``train_net.Trainer``).

The model is the real VGG-16 InstanceFCN from the base config, randomly initialised and
run on images of at most ~64 px, so every test takes well under a second or two.
"""
import json
import logging
import os
import sys
import uuid

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
import instancefcn_d2.meta_arch as meta_arch_mod
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.structures import BoxMode, Instances
from pycocotools import mask as mask_util

from instancefcn_d2 import InstanceFCNDatasetMapper
from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.engine import check_config
from instancefcn_d2.evaluation import SegmentProposalEvaluator
from instancefcn_d2.weights import vgg16_param_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_YAML = os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = [
    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
    "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
    "INPUT.MIN_SIZE_TRAIN", "(48,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "MODEL.INSTANCEFCN.TEST_SCALES", "[64]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "256",
    "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "50", "TEST.DETECTIONS_PER_IMAGE", "20",
    "MODEL.INSTANCEFCN.BATCH_SIZE_PER_IMAGE", "64",
]


def make_cfg(*opts, base=BASE_YAML):
    return get_project_cfg(base, SMALL + list(opts))


def write_image(path, h=48, w=64, seed=0):
    img = np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8)
    assert cv2.imwrite(str(path), img)
    return img


def square(x0, y0, x1, y1, **kw):
    return dict({"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                 "iscrowd": 0, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}, **kw)


def record(path, annos=(), h=48, w=64, image_id=1):
    return {"file_name": str(path), "height": h, "width": w, "image_id": image_id,
            "annotations": [dict(a) for a in annos]}


def register_json(tmp_path, images, annotations=(), image_root=None):
    """Write a COCO instances file and register it under a fresh name; returns the name."""
    name = f"bad_inputs_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.json"
    for i, a in enumerate(annotations):
        a.setdefault("id", i + 1)
        a.setdefault("category_id", 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    path.write_text(json.dumps({"images": images, "annotations": list(annotations),
                                "categories": [{"id": 1, "name": "object"}]}))
    register_coco_instances(name, {}, str(path), str(image_root or tmp_path))
    return name


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(make_cfg())


@pytest.fixture
def train_mapper():
    return InstanceFCNDatasetMapper(make_cfg(), True)


@pytest.fixture
def test_mapper():
    return InstanceFCNDatasetMapper(make_cfg(), False)


def train_step(model, batch):
    model.train()
    model.zero_grad()
    losses = model(batch)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()), losses
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
    return {k: v.item() for k, v in losses.items()}


# ----------------------------------------------------------------------------- config
def test_unknown_key_on_command_line_gets_close_match():
    with pytest.raises(KeyError) as e:
        get_project_cfg(BASE_YAML, ["MODEL.INSTANCEFCN.WINDOWSIZE", "5"])
    msg = str(e.value)
    assert "MODEL.INSTANCEFCN.WINDOWSIZE" in msg and "Did you mean MODEL.INSTANCEFCN.WINDOW_SIZE" in msg
    assert "command-line" in msg


def test_unknown_key_in_file_gets_close_match(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {BASE_YAML}\nSOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(KeyError) as e:
        get_project_cfg(str(bad))
    assert "SOLVER.BASE_LRR" in str(e.value) and "Did you mean SOLVER.BASE_LR" in str(e.value)
    assert str(bad) in str(e.value)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="Config file not found"):
        get_project_cfg("configs/nope.yaml")


def test_missing_weights_file():
    cfg = make_cfg("MODEL.WEIGHTS", "/nonexistent/vgg16.pth")
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS='/nonexistent/vgg16.pth' does not exist.*setup.sh"):
        check_config(cfg)


def test_wrong_shaped_weights_file(tmp_path):
    # every conv present, conv1_1 built for 1-channel input; stride-0 views keep the file tiny
    shapes = dict(vgg16_param_shapes(), **{"conv1_1.weight": (64, 1, 3, 3)})
    path = tmp_path / "gray_vgg.pth"
    torch.save({"model": {f"backbone.{k}": torch.zeros(1).expand(s) for k, s in shapes.items()}}, path)
    with pytest.raises(ValueError) as e:
        check_config(make_cfg("MODEL.WEIGHTS", str(path)))
    msg = str(e.value)
    assert f"MODEL.WEIGHTS='{path}'" in msg
    assert "conv1_1.weight has shape (64, 1, 3, 3), expected (64, 3, 3, 3)" in msg


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"MODEL.WEIGHTS=.*not a readable torch checkpoint"):
        check_config(make_cfg("MODEL.WEIGHTS", str(path)))


def test_zero_pixel_std_rejected():
    with pytest.raises(ValueError, match=r"PIXEL_STD=\[1.0, 0.0, 1.0\].*positive"):
        check_config(make_cfg("MODEL.PIXEL_STD", "[1.0, 0.0, 1.0]"))


def test_unregistered_dataset_name():
    with pytest.raises(KeyError) as e:
        check_config(make_cfg("DATASETS.TRAIN", "('synthetic_trian',)"))
    msg = str(e.value)
    assert "DATASETS.TRAIN names 'synthetic_trian', which is not a registered dataset" in msg
    assert "synthetic_train" in msg.split("did you mean")[1]


def test_dataset_json_does_not_exist(tmp_path):
    name = f"bad_inputs_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(tmp_path / "missing.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        check_config(make_cfg("DATASETS.TEST", f"('{name}',)"))
    assert f"DATASETS.TEST: dataset '{name}'" in str(e.value) and "missing.json" in str(e.value)


def test_missing_and_empty_image_files_fail_before_training(tmp_path):
    write_image(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    images = [{"id": i + 1, "file_name": f, "height": 48, "width": 64}
              for i, f in enumerate(["ok.png", "gone1.png", "gone2.png", "empty.png"])]
    name = register_json(tmp_path, images)
    with pytest.raises(FileNotFoundError) as e:
        check_config(make_cfg("DATASETS.TRAIN", f"('{name}',)"))
    msg = str(e.value)
    assert f"DATASETS.TRAIN: dataset '{name}'" in msg
    assert "2 of 4 image files do not exist" in msg and "gone1.png" in msg and "gone2.png" in msg
    assert "1 image file(s) are empty (0 bytes)" in msg and "empty.png" in msg
    assert f"image root it was registered with ('{tmp_path}')" in msg
    # eval-only runs check only DATASETS.TEST; this dataset is not one of them
    check_config(make_cfg("DATASETS.TRAIN", f"('{name}',)"), training=False)


def test_image_missing_at_run_time(tmp_path, train_mapper, test_mapper, caplog):
    """A file that disappears after the up-front check: skipped in training, named at test time."""
    d = record(tmp_path / "vanished.png", [square(8, 8, 40, 40)])
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        assert train_mapper(d) is None
    assert "vanished.png" in caplog.text and "skipping it" in caplog.text
    with pytest.raises(ValueError, match=r"Cannot use image '.*vanished.png': FileNotFoundError"):
        test_mapper(d)


# ----------------------------------------------------------------------------- images
@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4], ids=["0_bytes", "garbage"])
def test_corrupt_image(tmp_path, content, train_mapper, test_mapper, caplog):
    path = tmp_path / "corrupt.png"
    path.write_bytes(content)
    d = record(path, [square(8, 8, 40, 40)])
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        assert train_mapper(d) is None
    assert f"Cannot use image '{path}'" in caplog.text and "skipping it" in caplog.text
    with pytest.raises(ValueError, match=r"Cannot use image '.*corrupt.png': UnidentifiedImageError"):
        test_mapper(d)


def test_train_loader_skips_corrupt_images_and_stops_when_all_are(tmp_path, train_mapper):
    """Through detectron2's loader: its retry path (MapDataset) must survive a skipped image."""
    good = [record(tmp_path / f"good{i}.png", [square(8, 8, 40, 40)], image_id=i) for i in range(2)]
    for i in range(2):
        write_image(tmp_path / f"good{i}.png", seed=i)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    bad = record(tmp_path / "bad.png", [square(8, 8, 40, 40)], image_id=9)
    loader = build_detection_train_loader([good[0], bad, good[1]], mapper=train_mapper, total_batch_size=1,
                                          aspect_ratio_grouping=False, num_workers=0)
    it = iter(loader)
    names = {os.path.basename(next(it)[0]["file_name"]) for _ in range(6)}
    assert names <= {"good0.png", "good1.png"} and names

    loader = build_detection_train_loader([bad, dict(bad, image_id=10)], mapper=train_mapper,
                                          total_batch_size=1, aspect_ratio_grouping=False, num_workers=0)
    with pytest.raises(RuntimeError, match="Every image of the training set failed"):
        next(iter(loader))


def _pil_save(img_bgr, path, mode):
    Image.fromarray(np.ascontiguousarray(img_bgr[..., ::-1])).convert(mode).save(path)


@pytest.mark.parametrize("kind", ["gray", "gray16", "rgba", "palette"])
def test_grayscale_rgba_and_palette_images_become_3_channel_bgr(tmp_path, kind, train_mapper, test_mapper):
    img = np.random.RandomState(1).randint(0, 256, (48, 64, 3), np.uint8)
    path = tmp_path / f"{kind}.png"
    if kind == "gray":
        cv2.imwrite(str(path), img[..., 0])
    elif kind == "gray16":
        cv2.imwrite(str(path), img[..., 0].astype(np.uint16) * 257)
    elif kind == "rgba":
        cv2.imwrite(str(path), np.dstack([img, np.full((48, 64), 7, np.uint8)]))
    else:
        _pil_save(img, path, "P")
    d = record(path, [square(8, 8, 40, 40)])
    out = test_mapper(d)["image"]
    assert out.shape == (3, 48, 64) and out.dtype == torch.uint8
    if kind in ("gray", "gray16"):
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    if kind == "gray":
        assert torch.equal(out[0], torch.from_numpy(img[..., 0]))
    if kind == "rgba":  # alpha dropped, BGR order kept
        assert torch.equal(out, torch.from_numpy(img).permute(2, 0, 1))
    tr = train_mapper(d)
    assert tr["image"].shape[0] == 3 and len(tr["instances"]) == 1


# ----------------------------------------------------------------------------- annotations
def test_image_without_annotations_trains_on_negatives_only(tmp_path, train_mapper, model):
    write_image(tmp_path / "empty_scene.png")
    d = train_mapper(record(tmp_path / "empty_scene.png", []))
    assert len(d["instances"]) == 0 and len(d["crowd_boxes"]) == 0
    losses = train_step(model, [d])
    assert losses["loss_objectness"] > 0 and losses["loss_mask"] == 0


def test_crowd_only_image_is_ignored(tmp_path, train_mapper, model):
    write_image(tmp_path / "crowd.png")
    h, w = 48, 64
    m = np.ones((h, w), np.uint8)  # a crowd over the whole image: every window is ignored
    rle = mask_util.encode(np.asfortranarray(m))
    crowd = {"bbox": [0, 0, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
             "segmentation": rle}
    d = train_mapper(record(tmp_path / "crowd.png", [crowd]))
    assert len(d["instances"]) == 0 and len(d["crowd_boxes"]) == 1
    ih, iw = d["image"].shape[1:]
    assert d["crowd_boxes"].tensor.tolist() == [[0.0, 0.0, float(iw), float(ih)]]
    losses = train_step(model, [d])
    assert losses == {"loss_objectness": 0.0, "loss_mask": 0.0}  # nothing sampled, nothing learnt
    # next to an ordinary image in the same batch, the crowd image adds nothing
    write_image(tmp_path / "plain.png", seed=3)
    plain = train_mapper(record(tmp_path / "plain.png", []))
    assert train_step(model, [plain, d])["loss_objectness"] > 0


def test_degenerate_polygons_dropped_with_warning_others_kept(tmp_path, train_mapper, model, caplog):
    write_image(tmp_path / "img.png")
    annos = [
        square(8, 8, 40, 40, segmentation=[[1, 1, 5, 5]]),  # 2 points
        square(8, 8, 40, 40, segmentation=[[1, 1, 5, 5, 9, 9]]),  # collinear: zero area
        square(8, 8, 40, 40, segmentation=[[1, 1, 5, 5, 9]]),  # odd number of coordinates
        square(8, 8, 40, 40, segmentation=[]),  # no polygon at all
        square(8, 8, 40, 40, segmentation=[[1, 1, 5, 5], [8, 8, 40, 8, 40, 40, 8, 40]]),  # one part ok
        square(10, 10, 30, 30),
    ]
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        d = train_mapper(record(tmp_path / "img.png", annos))
    assert "dropped 4 annotation(s) whose polygons are all degenerate" in caplog.text
    assert len(d["instances"]) == 2 and d["instances"].gt_masks.area().min() > 0
    train_step(model, [d])


def test_boxes_outside_the_image_are_clipped(tmp_path, train_mapper, model):
    write_image(tmp_path / "img.png")
    annos = [
        square(40, 30, 100, 90),  # hangs over the bottom-right corner
        square(-10, -10, 10, 10),  # hangs over the top-left corner
        square(100, 100, 120, 120),  # entirely outside: dropped
        square(10, 10, 30, 30, bbox=[-500, -500, 2000, 2000]),  # absurd bbox field: box comes from the mask
    ]
    d = train_mapper(record(tmp_path / "img.png", annos))
    h, w = d["image"].shape[1:]
    boxes = d["instances"].gt_boxes.tensor
    assert len(boxes) == 3
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= h).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    train_step(model, [d])


def test_malformed_annotations(tmp_path, train_mapper, caplog):
    """Box-only objects become ignore regions; an RLE of the wrong size is dropped; anything
    else that breaks the annotations skips the image (with a warning) instead of the run."""
    write_image(tmp_path / "img.png")
    box_only = {k: v for k, v in square(8, 8, 40, 40).items() if k != "segmentation"}
    wrong = np.zeros((30, 30), np.uint8)
    wrong[5:20, 5:20] = 1
    wrong_rle = square(0, 0, 30, 30, segmentation=mask_util.encode(np.asfortranarray(wrong)))
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        d = train_mapper(record(tmp_path / "img.png", [box_only, wrong_rle, square(10, 10, 30, 30)]))
    assert len(d["instances"]) == 1 and len(d["crowd_boxes"]) == 1
    assert "no 'segmentation'; their boxes are used as ignore regions" in caplog.text
    assert "RLE mask size is not the image's (48, 64)" in caplog.text

    no_mode = {k: v for k, v in square(8, 8, 40, 40).items() if k != "bbox_mode"}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="instancefcn_d2"):
        assert train_mapper(record(tmp_path / "img.png", [no_mode])) is None
    assert "Cannot use the annotations of image" in caplog.text
    assert "img.png': KeyError: 'bbox_mode' -- skipping it" in caplog.text


# ----------------------------------------------------------------------------- sizes and ids
class GroundTruthModel(torch.nn.Module):
    """Returns each image's ground-truth masks as proposals (read from the dataset dicts)."""

    def __init__(self, dicts):
        super().__init__()
        self.by_id = {d["image_id"]: d for d in dicts}

    def forward(self, inputs):
        outs = []
        for inp in inputs:
            d = self.by_id[inp["image_id"]]
            h, w = d["height"], d["width"]
            masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w)))
                     for a in d["annotations"] if not a.get("iscrowd", 0)]
            inst = Instances((h, w))
            inst.pred_masks = torch.as_tensor(np.array(masks, dtype=bool).reshape(-1, h, w))
            from detectron2.structures import BitMasks

            inst.pred_boxes = BitMasks(inst.pred_masks).get_bounding_boxes()
            inst.scores = torch.linspace(1, 0.5, len(masks))
            inst.objectness_logits = torch.logit(inst.scores.clamp(max=0.99))
            outs.append({"instances": inst})
        return outs


def test_image_id_zero_through_loader_and_evaluator(tmp_path):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", seed=i)
    images = [{"id": i, "file_name": f"{i}.png", "height": 48, "width": 64} for i in range(2)]
    annos = [square(8, 8, 30, 30, image_id=0), square(30, 10, 60, 40, image_id=0), square(5, 5, 25, 45, image_id=1)]
    for a in annos:
        a.pop("bbox_mode")
        a["category_id"] = 1
    name = register_json(tmp_path, images, annos)
    dicts = DatasetCatalog.get(name)
    assert sorted(d["image_id"] for d in dicts) == [0, 1]
    loader = build_detection_test_loader(dicts, mapper=InstanceFCNDatasetMapper(make_cfg(), False))
    res = inference_on_dataset(GroundTruthModel(dicts), loader, SegmentProposalEvaluator(name))
    assert res["segm_proposals"]["AR@10"] == pytest.approx(100.0)
    assert res["box_proposals"]["AR@10"] == pytest.approx(100.0)


def test_image_smaller_than_one_window(tmp_path, model):
    """20 x 20 px: smaller than the 168-px window and than the stride-8 grid's padding."""
    write_image(tmp_path / "tiny.png", 20, 20)
    d = record(tmp_path / "tiny.png", [square(3, 3, 17, 17)], 20, 20)
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", "(20,)", "INPUT.MAX_SIZE_TRAIN", "20",
                   "MODEL.INSTANCEFCN.TEST_SCALES", "[20]")
    tr = InstanceFCNDatasetMapper(cfg, True)(d)
    assert tuple(tr["image"].shape) == (3, 20, 20)
    train_step(model, [tr])
    model.eval()
    model.test_scales = (20,)
    try:
        inst = model([InstanceFCNDatasetMapper(cfg, False)(d)])[0]["instances"]
    finally:
        model.test_scales = (64,)
    assert inst.image_size == (20, 20) and inst.pred_masks.shape[1:] == (20, 20)
    assert len(inst) > 0  # windows larger than the image still give proposals, inside it
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 20).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_image_larger_than_4000px_keeps_pyramid_capped(tmp_path, model):
    h, w = 40, 4200  # > 4000 px; thin so the test itself stays small
    write_image(tmp_path / "panorama.png", h, w)
    d = InstanceFCNDatasetMapper(make_cfg(), False)(record(tmp_path / "panorama.png", [], h, w))
    assert tuple(d["image"].shape) == (3, h, w)  # MIN_SIZE_TEST 0: the model builds the pyramid
    seen = []  # the sizes the backbone is given
    hook = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    model.eval()
    model.test_scales, model.test_max_size = (64, 400), 512
    try:
        inst = model([d])[0]["instances"]
        assert model.pyramid_sizes(h, w) == [(5, 512), (5, 512)]  # longer side capped at TEST_MAX_SIZE
        assert model.pyramid_sizes(6000, 4500) == [(85, 64), (512, 384)]
    finally:
        model.test_scales, model.test_max_size = (64,), 256
        hook.remove()
    assert seen and all(max(s) <= 512 for s in seen)  # the backbone never sees the 4200-px image
    assert inst.image_size == (h, w) and 0 < len(inst) <= 20
    assert inst.pred_masks.shape == (len(inst), h, w)
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()


# ----------------------------------------------------------------------------- NaN losses
def test_nan_loss_stops_with_a_hint(tmp_path, monkeypatch):
    sys.path.insert(0, REPO)
    try:
        from train_net import Trainer
    finally:
        sys.path.remove(REPO)
    for i in range(2):
        write_image(tmp_path / f"{i}.png", seed=i)
    images = [{"id": i + 1, "file_name": f"{i}.png", "height": 48, "width": 64} for i in range(2)]
    name = register_json(tmp_path, images)
    cfg = make_cfg("DATASETS.TRAIN", f"('{name}',)", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "4",
                   "SOLVER.CHECKPOINT_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
                   "OUTPUT_DIR", str(tmp_path / "out"))
    check_config(cfg)

    calls = []
    original = meta_arch_mod.InstanceFCN.losses

    def losses(self, *args, **kwargs):  # iteration 0 is fine, iteration 1 diverges
        out = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) >= 2:
            out["loss_mask"] = out["loss_mask"] * float("nan")
        return out

    monkeypatch.setattr(meta_arch_mod.InstanceFCN, "losses", losses)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    msg = str(e.value)
    assert "Loss became infinite or NaN at iteration=1" in msg
    assert "SOLVER.BASE_LR=0.001" in msg and "SOLVER.CLIP_GRADIENTS.ENABLED True" in msg
    assert "MODEL.PIXEL_MEAN" in msg
    last = os.path.join(str(tmp_path / "out"), "model_0000000.pth")
    assert f"last good checkpoint is {last}" in msg
    assert open(tmp_path / "out" / "last_checkpoint").read() == "model_0000000.pth"
