"""Two CPU training runs with the same SEED are bit-identical; another SEED is not.

Runs go through ``train_net.setup`` (``default_setup`` seeds Python, NumPy and torch from
``cfg.SEED``) and ``train_net.Trainer`` in this process, 5 iterations of VGG-16 InstanceFCN on
``synthetic_tiny_train``. The window is shrunk to 11 cells so that these small images have
positive windows and the mask loss (assembling's scatter-add backward) is exercised too.
"""
import json
import os
import sys

import pytest
import torch

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml")
ITERS = 5
KEYS = ("total_loss", "loss_objectness", "loss_mask", "instancefcn/num_pos_windows", "lr")


@pytest.fixture
def train_net_module(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANCEFCN_SYNTHETIC_ROOT", str(tmp_path / "synthetic"))

    def unregister():
        for name in ("synthetic_tiny_train", "synthetic_tiny_val"):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)

    unregister()
    sys.path.insert(0, REPO)
    try:
        import train_net
    finally:
        sys.path.remove(REPO)
    yield train_net
    unregister()


def run(train_net, out_dir, seed, iters=ITERS):
    opts = [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "MODEL.INSTANCEFCN.WINDOW_SIZE", "11",
        "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", "1000",
        "SOLVER.WARMUP_ITERS", "2",
        "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0",
        "SEED", str(seed), "OUTPUT_DIR", str(out_dir),
    ]
    args = default_argument_parser().parse_args(["--config-file", QUICKSTART, *opts])
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = {k: [(it, v) for v, it in trainer.storage.history(k).values()] for k in KEYS}
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    metrics = [json.loads(x) for x in open(os.path.join(out_dir, "metrics.json"))]
    for m in metrics:  # wall-clock entries differ between any two runs
        for k in ("time", "data_time", "eta_seconds"):
            m.pop(k, None)
    return history, params, metrics


def test_same_seed_same_losses_and_weights(tmp_path, train_net_module):
    h1, p1, m1 = run(train_net_module, tmp_path / "a", seed=5)
    h2, p2, m2 = run(train_net_module, tmp_path / "b", seed=5)

    assert [it for it, _ in h1["total_loss"]] == list(range(ITERS))
    assert any(v > 0 for _, v in h1["instancefcn/num_pos_windows"]), "no positive window: mask loss untested"
    assert any(v > 0 for _, v in h1["loss_mask"])
    assert h1 == h2  # exact floats, every iteration
    assert m1 == m2 and m1  # metrics.json
    assert p1.keys() == p2.keys()
    for k in p1:
        assert torch.equal(p1[k], p2[k]), k

    h3, _, _ = run(train_net_module, tmp_path / "c", seed=6, iters=2)  # the seed matters
    assert h3["total_loss"] != h1["total_loss"][:2]
