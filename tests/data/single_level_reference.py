"""Losses and proposals of a seeded tiny single-level model, as JSON on stdout.

The reference file beside it was written by the commit before the feature-pyramid model
(c5cb059) with ``git worktree add /tmp/old c5cb059 && PYTHONPATH=/tmp/old python
tests/data/single_level_reference.py > tests/data/single_level_c5cb059.json``; the
single-level path must still give exactly these numbers (tests/unit/test_fpn.py).
"""
import json, sys, torch
import torch.nn as nn, torch.nn.functional as F
import instancefcn_d2  # noqa
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, Instances, PolygonMasks, BitMasks
from instancefcn_d2 import InstanceFCN
from instancefcn_d2.heads import InstanceBranch, ObjectnessBranch
from instancefcn_d2.targets import WindowLabeler

class Tiny(Backbone):
    cell_offsets = {"conv5": 0.5}  # 8x8 average pooling tiles the input (read by the model since issue 23)
    def __init__(self):
        super().__init__(); self.conv = nn.Conv2d(3, 8, 3, padding=1)
    def forward(self, x): return {"conv5": F.relu(self.conv(F.avg_pool2d(x, 8)))}
    def output_shape(self): return {"conv5": ShapeSpec(channels=8, stride=8)}

def model(**kw):
    torch.manual_seed(0)
    return InstanceFCN(backbone=Tiny(), instance_branch=InstanceBranch(in_channels=8, k=3, channels=16),
        objectness_branch=ObjectnessBranch(in_channels=8, channels=16),
        labeler=WindowLabeler(canonical_ratio=40/56, pos_center_offset=4/56, neg_center_offset=8/56),
        pixel_mean=[100., 110., 120.], pixel_std=[50., 50., 50.], window_size=7, batch_size_per_image=32,
        test_scales=(64, 128), test_max_size=1000, topk_per_scale=50, **kw)

def inp(h, w, boxes, seed, bitmask=False):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w)); inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    if bitmask:
        bm = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes): bm[i, y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(bm)
    else:
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
    return {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "instances": inst}

def run(**kw):
    m = model(**kw).train()
    batch = [inp(64, 64, [(8, 8, 48, 48), (20, 16, 60, 56)], 1), inp(72, 80, [(16, 16, 56, 56)], 2, bitmask=True)]
    torch.manual_seed(1)
    losses = {k: v.item() for k, v in m(batch).items()}
    m.eval()
    with torch.no_grad():  # one image at a time: a batch pads the smaller image (other border features)
        out = [m([{"image": b["image"]}])[0] for b in batch]
    props = [{"boxes": o["instances"].pred_boxes.tensor.tolist(), "logits": o["instances"].objectness_logits.tolist(),
              "mask_sum": o["instances"].pred_masks.flatten(1).sum(1).tolist()} for o in out]
    return {"losses": losses, "proposals": props}


if __name__ == "__main__":
    print(json.dumps(run(**(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))))
