"""The models compared, each with its fair recipe: a config, the learning rates its short sweep
tries, and the AR that chooses among them."""
from dataclasses import dataclass
from typing import Tuple

__all__ = ["SIDES", "Side"]


@dataclass(frozen=True)
class Side:
    config: str
    lrs: Tuple[float, ...]  # swept at the short budget; the best goes on to the full budget
    select: str  # "segm_proposals" or "box_proposals": its AR@100 chooses the lr
    peer: bool  # detectron2's own model (detectron2's data mapper, one class) vs InstanceFCN
    note: str


# Every side chose the highest rate of an earlier, lower sweep (2x-8x detectron2's scaled rate;
# for InstanceFCN 0.015-0.06 around the quick start's former 0.015) on the quick-start, HeLa and
# bacteria data, so each sweep reaches one doubling higher: a rate that diverges is dropped, not
# chosen. InstanceFCN's choice, 0.06, is the quick-start config's rate now; its sweep brackets it.
SIDES = {
    "instancefcn": Side(
        "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml", (0.03, 0.06, 0.12), "segm_proposals", False,
        "the quick-start config as is; lrs: half its BASE_LR, its own and 2x"),
    # detectron2's BASE_LR 0.02 at 16 images per batch is 0.00125 at one (linear scaling);
    # short budgets favour more.
    "mask_rcnn": Side(
        "configs/peers/MaskRCNN-VGG16-FPN-synthetic.yaml", (0.005, 0.01, 0.02), "segm_proposals", True,
        "class-agnostic Mask R-CNN; lrs: 4x, 8x, 16x detectron2's 0.02 scaled to 1 image per batch"),
    "rpn": Side(
        "configs/peers/RPN-VGG16-FPN-synthetic.yaml", (0.005, 0.01, 0.02), "box_proposals", True,
        "RPN alone (box proposals); lrs as Mask R-CNN's"),
}
