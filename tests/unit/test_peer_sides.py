"""The InstanceFCN side of the peers' sweep brackets the rate its config trains at, as its note
says (tools/peers/sides.py): the sweep can then find a better rate on either side of it."""
import os
import sys

import pytest

import instancefcn_d2  # noqa: F401  (detectron2 shims first)
from instancefcn_d2.config import get_project_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tools.peers.sides import SIDES  # noqa: E402


def test_instancefcn_sweep_brackets_its_configs_rate():
    side = SIDES["instancefcn"]
    lr = get_project_cfg(os.path.join(REPO, side.config)).SOLVER.BASE_LR
    assert min(side.lrs) < lr < max(side.lrs), (side.lrs, lr)
    assert sorted(side.lrs) == pytest.approx([lr / 2, lr, 2 * lr])  # "half its BASE_LR, its own and 2x"
