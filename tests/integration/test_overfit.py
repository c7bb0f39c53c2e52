"""The model learns: a short CPU run overfits one generated image of touching objects.

This goes through the real path (synthetic generator -> detectron2 COCO loader ->
InstanceFCNDatasetMapper -> InstanceFCN with the ImageNet VGG-16 start) and checks what the
paper's method must do on such a scene: both losses fall by more than half, and every object
is proposed, as a separate instance, among the top 10 with mask IoU > 0.5.

The backbone stays frozen at its ImageNet weights (FREEZE_AT 5): the forward pass is most of an
iteration's time, so the heads learning from ImageNet features is what 20 CPU iterations can
show; training the backbone is covered by the training-step tests.
"""
import os

import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401
from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.data import InstanceFCNDatasetMapper, generate_split, summarize_split

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data.datasets import load_coco_json
from detectron2.modeling import build_model
from pycocotools import mask as mask_util

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(REPO, "weights", "vgg16_caffe_imagenet.pth")
ITERS = 20


def _touching_scene(tmp_path):
    """First generated image with >= 3 objects of which some touch (deterministic)."""
    json_path = generate_split(
        str(tmp_path), "one", 12, seed=3, min_size=208, max_size=240, min_objects=3, max_objects=3,
        object_size=(88, 108), crowd_fraction=0.0, empty_fraction=0.0, min_visible_area=1500,
    )
    assert summarize_split(json_path)["touching_pairs"] > 0
    dicts = load_coco_json(json_path, os.path.join(str(tmp_path), "one"), "synthetic_one")
    for d in dicts:
        anns = d["annotations"]
        if len(anns) < 3:
            continue
        masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], d["height"], d["width"])))
                 for a in anns]
        grown = [torch.nn.functional.max_pool2d(torch.from_numpy(m)[None, None].float(), 3, 1, 1)[0, 0] > 0
                 for m in masks]
        touching = any((grown[i].numpy() & (masks[j] > 0)).any() for i in range(3) for j in range(3) if i != j)
        if touching:
            return d, np.stack(masks).astype(bool)
    pytest.fail("no generated image with three touching objects")


@pytest.mark.skipif(not os.path.isfile(WEIGHTS), reason="run `bash tools/setup.sh` for the ImageNet weights")
def test_overfits_one_image_of_touching_objects(tmp_path):
    torch.manual_seed(0)
    record, gt_masks = _touching_scene(tmp_path)
    h, w = record["height"], record["width"]

    cfg = get_project_cfg(os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.FREEZE_AT = 5  # conv1..conv5 at ImageNet: only the two branches learn
    cfg.INPUT.MIN_SIZE_TRAIN = (min(h, w),)  # native size: every object fits the window's scale
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.INSTANCEFCN.TEST_SCALES = [min(h, w)]
    # The quick start's mask-loss scale: with the paper's "window" sum (~m^2 = 441x larger
    # gradients on the mask term) this lr and no gradient clipping diverge to NaN.
    cfg.MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION = "pixel"
    model = build_model(cfg)
    DetectionCheckpointer(model).load(WEIGHTS)
    example = InstanceFCNDatasetMapper(cfg, is_train=True)(record)
    assert len(example["instances"]) == 3

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.006, momentum=0.9)
    model.train()
    history = []
    for _ in range(ITERS):
        losses = model([example])
        history.append({k: v.item() for k, v in losses.items()})
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    for key in ("loss_objectness", "loss_mask"):
        first = history[0][key]
        last = np.mean([h_[key] for h_ in history[-5:]])
        assert last < 0.5 * first, f"{key} fell only from {first:.3f} to {last:.3f}"

    model.eval()
    with torch.no_grad():
        out = model([{"image": example["image"], "height": h, "width": w}])[0]["instances"]
    top = out.pred_masks[:10].numpy()
    assert len(top) >= 3
    best = []
    for gt in gt_masks:
        inter = (top & gt).reshape(len(top), -1).sum(1)
        union = (top | gt).reshape(len(top), -1).sum(1)
        ious = inter / np.maximum(union, 1)
        best.append(int(ious.argmax()))
        assert ious.max() > 0.5, f"object not proposed: best IoU {ious.max():.2f}"
    # Touching objects come out as separate proposals, not one merged blob.
    assert len(set(best)) == len(gt_masks)
