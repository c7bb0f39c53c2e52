#!/usr/bin/env python
"""InstanceFCN against class-agnostic Mask R-CNN and RPN alone: trained and scored in one run on
the same data, VGG-16-FPN, ImageNet start and number of images seen.

    python tools/peer_comparison.py                    # quick-start data -> results/peers.json
    python tools/peer_comparison.py --datasets hela_train:hela_val bacteria_train:bacteria_val \\
        INPUT.MIN_SIZE_TEST 700 ...                    # other registered sets (KEY VALUE: every side)
    python tools/peer_comparison.py --smoke --out /tmp/peers.json   # tiny (CI)

Sides (tools/peers/sides.py): InstanceFCN (configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml
as is), detectron2's Mask R-CNN made class-agnostic and detectron2's RPN alone
(configs/peers/*.yaml: detectron2's defaults scaled to the budget). For each side a short
learning-rate sweep (--sweep-iters per lr; schedule scaled) trained on the training set less its
last images (--sweep-holdout) and scored on those, the lr with the best AR@100 there, then the
full budget on the whole training set (--iters, default the configs' MAX_ITER, which must agree) at
that lr. Each model is scored by SegmentProposalEvaluator (mask and box AR@10/100/1000 and by
size; RPN: boxes only); training seconds (wall clock) and inference seconds per image (the
model's forward) are recorded with the machine (tools/machine.py). Run it alone on the machine
(timings), e.g. under ``flock /tmp/heavy.lock``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.peers.cli import main  # noqa: E402

if __name__ == "__main__":
    main(doc=__doc__)
