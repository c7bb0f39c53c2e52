"""What docs/reproducibility.md promises, checked as a user runs it: the quick-start config
(shortened: tiny generated images, 4 iterations) trained by ``train_net.py`` in two separate
processes with the same SEED, one data-loading worker (DATALOADER.NUM_WORKERS 1), the same
thread count and evaluation during training (TEST.EVAL_PERIOD 2) gives the same losses
(metrics.json), the same AR and the same weights. The same runs test periodic evaluation: it
runs at the period and at the end, and the final in-training AR is what ``--eval-only`` on the
final weights gives.

The window is shrunk to 11 cells so that these small images have positive windows and the mask
loss (assembling's scatter-add backward) is part of what must repeat."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml"
ITERS, PERIOD = 4, 2
OPTS = [
    "MODEL.WEIGHTS", "", "MODEL.INSTANCEFCN.WINDOW_SIZE", "11",
    "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "('synthetic_tiny_val',)",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "MODEL.INSTANCEFCN.TEST_SCALES", "[96]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "128",
    "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "100",
    "SOLVER.MAX_ITER", str(ITERS), "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "0",
    "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", str(PERIOD),
    "DATALOADER.NUM_WORKERS", "1", "SEED", "5",
]
# Wall-clock entries of metrics.json differ between any two runs.
TIMES = ("time", "data_time", "eta_seconds", "inference/s_per_image")


def train_net_process(out_dir, env):
    return subprocess.Popen([sys.executable, "train_net.py", "--config-file", CONFIG, *OPTS,
                             "OUTPUT_DIR", str(out_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"train_net.py did not finish within {timeout} s")
    assert proc.returncode == 0, out[-4000:]
    return out


def metrics(out_dir):
    rows = [json.loads(line) for line in open(out_dir / "metrics.json")]
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, module_synthetic_root, load_tool, train_net):
    tmp = tmp_path_factory.mktemp("repro")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # Generate the data once, so that the two runs can start together without racing on it.
    load_tool("make_synthetic_dataset").main(["--preset", "synthetic_tiny"])
    procs = [train_net_process(tmp / name, env) for name in ("a", "b")]  # separate processes, at once
    for p in procs:
        finish(p)
    # --eval-only on run a's final weights (train_net's main, in this process)
    train_net(["--config-file", CONFIG, "--eval-only", *OPTS, "MODEL.WEIGHTS", tmp / "a" / "model_final.pth",
               "OUTPUT_DIR", tmp / "eval"])
    return tmp


def test_two_processes_same_losses_ar_and_weights(runs):
    a, b = metrics(runs / "a"), metrics(runs / "b")
    # detectron2 writes metrics.json every 20 iterations and at the end: one training row,
    # losses as the median over the run's iterations, and one row per evaluation.
    train_rows = [r for r in a if "total_loss" in r]
    assert [r["iteration"] for r in train_rows] == [ITERS - 1]
    assert train_rows[0]["instancefcn/num_pos_windows"] > 0, "no positive window: mask loss untested"
    assert train_rows[0]["loss_mask"] > 0
    assert len(a) == 3 and a == b  # exact floats: losses, learning rate, both evaluations' AR
    ar_a, ar_b = (json.loads((runs / d / "proposal_ar.json").read_text()) for d in ("a", "b"))
    for ar in (ar_a, ar_b):
        ar["inference"].pop("s_per_image")
    assert ar_a == ar_b and ar_a["box_proposals"]["AR@100"] > 0
    # The weights after the last step: every iteration's gradients were the same.
    wa, wb = (torch.load(runs / d / "model_final.pth", map_location="cpu", weights_only=False)["model"] for d in "ab")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_evaluation_during_training(runs):
    rows = metrics(runs / "a")
    evals = [r for r in rows if "segm_proposals/AR@100" in r]
    # EvalHook: after iteration PERIOD (index PERIOD - 1) and once more after training.
    assert len(evals) == 2 and evals[0]["iteration"] == PERIOD - 1 and evals[1]["iteration"] >= ITERS - 1
    assert evals[0] != evals[1]  # the second scored the further-trained model
    log = (runs / "a" / "log.txt").read_text()
    assert log.count("Start inference on 3 batches") == 2
    final = json.loads((runs / "a" / "proposal_ar.json").read_text())
    # proposal_ar.json is the last evaluation; an area range without ground truth is null there
    # and absent from metrics.json (EvalHook stores numbers only).
    for task in ("segm_proposals", "box_proposals"):
        for key, v in final[task].items():
            assert evals[-1].get(f"{task}/{key}") == v, (task, key)
    assert final["segm_proposals"]["ARl@1000"] is None  # the tiny val set has no large object
    assert final["inference"]["images"] == 3

    # --eval-only on the final weights scores exactly what the in-training evaluation scored.
    assert "Loading from " in (runs / "eval" / "log.txt").read_text()  # the weights, not a fresh model
    eval_only = json.loads((runs / "eval" / "proposal_ar.json").read_text())
    assert eval_only["segm_proposals"] == final["segm_proposals"]
    assert eval_only["box_proposals"] == final["box_proposals"]
