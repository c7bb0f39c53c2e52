"""End-to-end inference paths a user takes and README names:
* the torchvision-weights config: a torchvision-format VGG-16 file (random weights) ->
  tools/convert_vgg16_weights.py --torchvision -> build from
  configs/Base-InstanceFCN-VGG16-torchvision.yaml -> the backbone sees what torchvision's VGG-16
  sees on the same picture -> one inference on a tiny image;
* detectron2's DefaultPredictor and Visualizer on the model's output."""
import os

import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.visualizer import ColorMode, Visualizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TV_CONV4_3_RELU = 23  # torchvision vgg16().features[:23]: conv1_1 .. ReLU after conv4_3 (before pool4)
TINY = ["MODEL.DEVICE", "cpu", "MODEL.INSTANCEFCN.TEST_SCALES", "[96]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "128",
        "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "50"]


def picture(h=72, w=88, seed=0):
    """A seeded BGR uint8 picture: noise with a bright square and a dark disc."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 120, size=(h, w, 3), dtype=np.uint8)
    img[10:40, 12:44] = (30, 200, 240)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 48) ** 2 + (xx - 62) ** 2 < 15 ** 2] = (200, 40, 20)
    return img


def test_torchvision_weights_config_end_to_end(tmp_path, project_cfg, load_tool):
    torch.manual_seed(3)
    vgg = pytest.importorskip("torchvision.models.vgg")
    tv = vgg.make_layers(vgg.cfgs["D"]).eval()  # vgg16().features, without the 120M-parameter classifier
    with torch.no_grad():
        for mod in tv:
            if isinstance(mod, torch.nn.Conv2d):
                mod.bias.normal_(0.0, 0.1)
    # torchvision's file layout: features.N.* (+ classifier.*, which the converter drops;
    # a small stand-in keeps the file small).
    sd = {f"features.{k}": v for k, v in tv.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    src, dst = tmp_path / "vgg16-random.pth", tmp_path / "vgg16_torchvision_imagenet.pth"
    torch.save(sd, src)
    load_tool("convert_vgg16_weights").main(["--torchvision", str(src), str(dst)])

    cfg = project_cfg("configs/Base-InstanceFCN-VGG16-torchvision.yaml",
                      ["MODEL.WEIGHTS", str(dst), "MODEL.VGG.OUT_FEATURES", "['conv4', 'conv5']", *TINY])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)

    # The model's own normalisation of a BGR 0-255 picture + the converted weights give the
    # activations torchvision's VGG-16 gives on the RGB picture with torchvision's normalisation.
    bgr = picture()
    rgb01 = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])  # torchvision's
    tv_in = (rgb01 - mean[:, None, None]) / std[:, None, None]
    image = torch.from_numpy(bgr).permute(2, 0, 1)
    with torch.no_grad():
        ref = tv[:TV_CONV4_3_RELU](tv_in[None])
        ours = model.backbone(((image.float() - model.pixel_mean) / model.pixel_std)[None])["conv4"]
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())

    with torch.no_grad():
        out = model([{"image": image, "height": 72, "width": 88}])
    inst = out[0]["instances"]
    assert inst.image_size == (72, 88) and len(inst) > 0
    assert inst.pred_masks.shape == (len(inst), 72, 88) and inst.pred_masks.dtype == torch.bool
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])


def test_default_predictor_and_visualizer(project_cfg):
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml", ["MODEL.WEIGHTS", "", *TINY])
    torch.manual_seed(0)  # random initialisation: only the plumbing is under test
    predictor = DefaultPredictor(cfg)
    bgr = picture(seed=1)
    out = predictor(bgr)  # DefaultPredictor: BGR numpy in, the model's output for that image
    inst = out["instances"]
    assert inst.image_size == bgr.shape[:2] and len(inst) > 0
    assert inst.pred_masks.shape == (len(inst), *bgr.shape[:2])
    # The same picture through the model directly gives the same proposals.
    with torch.no_grad():
        direct = predictor.model([{"image": torch.from_numpy(bgr).permute(2, 0, 1), "height": 72, "width": 88}])
    assert torch.equal(direct[0]["instances"].pred_masks, inst.pred_masks)

    top = inst[:5].to("cpu")
    vis = Visualizer(bgr[:, :, ::-1], MetadataCatalog.get("__instancefcn_test_meta"), instance_mode=ColorMode.IMAGE)
    drawn = vis.draw_instance_predictions(top).get_image()
    assert drawn.shape == (*bgr.shape[:2], 3) and drawn.dtype == np.uint8
    # Pixels inside the top masks are painted over; the drawing is not the input picture.
    covered = top.pred_masks.any(dim=0).numpy()
    assert covered.any()
    changed = np.abs(drawn.astype(int) - bgr[:, :, ::-1].astype(int)).sum(axis=2) > 0
    assert changed[covered].mean() > 0.5
