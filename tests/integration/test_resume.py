"""A killed training job resumes with nothing lost; checkpoint writes are atomic.

* ``train_net.py`` on ``synthetic_tiny_train`` is SIGKILLed right after it wrote
  ``model_0000003.pth`` (detectron2 names a checkpoint after the 0-based iteration that just
  finished) and rerun with ``--resume`` (train_net's main, in the test process): training continues at iteration 4 with the SGD
  momentum buffers and the LR schedule of the checkpoint.
* ``AtomicDetectionCheckpointer``: a failure in the middle of a write leaves
  ``last_checkpoint`` pointing at a complete, loadable file, and no partial ``.pth``.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
import instancefcn_d2.checkpoint as ckpt_mod
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, hooks

from instancefcn_d2.checkpoint import AtomicDetectionCheckpointer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml")
MAX_ITER, PERIOD, BASE_LR, WARMUP_FACTOR = 12, 4, 0.001, 0.1


def fast_opts(out_dir):
    """Quick-start config made tiny: VGG-16 on 64-px images, one image per step, no eval.
    A linear warmup over the whole run makes the LR a different number at every iteration."""
    return [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "SOLVER.BASE_LR", str(BASE_LR),
        "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(MAX_ITER),
        "SOLVER.WARMUP_FACTOR", str(WARMUP_FACTOR),
        "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "3",
        "OUTPUT_DIR", str(out_dir),
    ]


def expected_lr(it):
    return BASE_LR * (WARMUP_FACTOR + (1 - WARMUP_FACTOR) * it / MAX_ITER)


def train_args(out_dir, *extra):
    """train_net.py's arguments for the tiny run."""
    return ["--config-file", QUICKSTART, *extra, *fast_opts(out_dir)]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------- kill and resume
def test_sigkill_then_resume_restores_iteration_optimizer_and_schedule(tmp_path, synthetic_root, train_net):
    out = tmp_path / "out"
    log1 = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train_net.py"), *train_args(out)], cwd=tmp_path, stdout=log1,
                            stderr=subprocess.STDOUT, start_new_session=True)
    last = out / "last_checkpoint"
    deadline = time.time() + 240
    try:
        while not (last.exists() and last.read_text().strip() == "model_0000003.pth"):
            if proc.poll() is not None:
                pytest.fail(f"training ended (rc={proc.returncode}) before model_0000003.pth:\n"
                            + (tmp_path / "run1.log").read_text()[-3000:])
            if time.time() > deadline:
                pytest.fail("no model_0000003.pth within 240 s")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log1.close()
    assert proc.returncode == -signal.SIGKILL

    # What the killed run left: last_checkpoint names a complete file holding the whole trainer
    tag = last.read_text().strip()
    assert not (out / "model_final.pth").exists()
    ckpt = load(out / tag)
    it = ckpt["iteration"]
    assert tag == f"model_{it:07d}.pth" and it in (3, 7)
    trainer_state = ckpt["trainer"]
    assert trainer_state["iteration"] == it
    assert trainer_state["hooks"]["LRScheduler"]["last_epoch"] == it + 1
    opt_state = trainer_state["_trainer"]["optimizer"]
    momentum = {k: v["momentum_buffer"] for k, v in opt_state["state"].items()}
    assert momentum and any(m.abs().sum() > 0 for m in momentum.values())  # not a fresh optimizer

    # Resuming rebuilds exactly that state (in this process, as train_net.main does)
    args = default_argument_parser().parse_args(train_args(out, "--resume"))
    cfg = train_net.module.setup(args)
    trainer = train_net.module.Trainer(cfg)
    assert isinstance(trainer.checkpointer, AtomicDetectionCheckpointer)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert periodic and periodic[0].checkpointer is trainer.checkpointer
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == it + 1
    assert trainer.scheduler.last_epoch == it + 1
    state = trainer.optimizer.state_dict()["state"]
    assert state.keys() == momentum.keys()
    for k, m in momentum.items():
        assert torch.equal(state[k]["momentum_buffer"], m)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr(it + 1))
    del trainer

    # ... and `train_net.py --resume` (its main, in this process) runs to the end of the schedule.
    # log.txt is appended to: the killed run's lines come first.
    killed_log = (out / "log.txt").read_text()
    train_net(train_args(out, "--resume"))
    log2 = (out / "log.txt").read_text()[len(killed_log):]
    assert f"Starting training from iteration {it + 1}" in log2
    assert f"Restored the trainer state of iteration {it}: optimizer ({len(momentum)} momentum buffers)" in log2
    assert "Starting training from iteration 0" not in log2
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    final = [x for x in lines if x.get("iteration") == MAX_ITER - 1]
    assert final and final[-1]["lr"] == pytest.approx(expected_lr(MAX_ITER - 1))  # schedule continued
    assert last.read_text().strip() == "model_final.pth"
    assert load(out / "model_final.pth")["iteration"] == MAX_ITER - 1
    assert {f"model_{i:07d}.pth" for i in range(it + PERIOD, MAX_ITER, PERIOD)} <= set(os.listdir(out))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# ------------------------------------------------------------------- atomic writes
class Tiny(torch.nn.Module):
    def __init__(self, value=0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((64, 64), value))


def _fail_mid_write(monkeypatch):
    """torch.save writes part of the file, then the process "dies" (an exception here)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(torch, "save", save)
    return real_save


def test_failed_save_keeps_last_checkpoint_valid(tmp_path, monkeypatch):
    ck = AtomicDetectionCheckpointer(Tiny(1.0), str(tmp_path))
    ck.save("model_0000003", iteration=3)
    _fail_mid_write(monkeypatch)
    ck.model.w.data.fill_(2.0)
    with pytest.raises(OSError, match="simulated"):
        ck.save("model_0000007", iteration=7)
    monkeypatch.undo()

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000003.pth"]  # nothing partial
    fresh = AtomicDetectionCheckpointer(Tiny(), str(tmp_path))
    assert fresh.resume_or_load("", resume=True)["iteration"] == 3
    assert fresh.model.w.eq(1.0).all()


def test_failed_overwrite_of_the_tagged_checkpoint(tmp_path, monkeypatch):
    """Re-saving the file last_checkpoint names (model_final.pth when a finished run is
    extended): in-place writing destroys it; the atomic checkpointer keeps the old one."""
    for cls, survives in ((DetectionCheckpointer, False), (AtomicDetectionCheckpointer, True)):
        d = tmp_path / cls.__name__
        d.mkdir()
        ck = cls(Tiny(1.0), str(d))
        ck.save("model_final", iteration=11)
        _fail_mid_write(monkeypatch)
        with pytest.raises(OSError):
            ck.save("model_final", iteration=23)
        monkeypatch.undo()
        assert (d / "last_checkpoint").read_text() == "model_final.pth"
        if survives:
            assert load(d / "model_final.pth")["iteration"] == 11
            assert sorted(os.listdir(d)) == ["last_checkpoint", "model_final.pth"]
        else:  # fvcore's Checkpointer: last_checkpoint now names a broken file
            with pytest.raises(Exception):
                load(d / "model_final.pth")


def test_tag_is_atomic_and_stale_partial_files_are_removed(tmp_path, monkeypatch):
    ck = AtomicDetectionCheckpointer(Tiny(3.0), str(tmp_path))
    ck.save("model_0000003", iteration=3)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("killed before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    ck.model.w.data.fill_(7.0)
    with pytest.raises(OSError, match="killed"):
        ck.save("model_0000007", iteration=7)
    monkeypatch.undo()
    # the new checkpoint is complete, but last_checkpoint still names the previous one, which
    # --resume reads: iteration 3 and its weights
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
    new = load(tmp_path / "model_0000007.pth")
    assert new["iteration"] == 7 and torch.equal(new["model"]["w"], torch.full((64, 64), 7.0))
    resumed = AtomicDetectionCheckpointer(Tiny(), str(tmp_path)).resume_or_load("", resume=True)
    assert resumed["iteration"] == 3
    assert torch.equal(load(tmp_path / "model_0000003.pth")["model"]["w"], torch.full((64, 64), 3.0))

    # a SIGKILL during torch.save leaves <name>.pth.tmp: ignored by the checkpoint listing,
    # deleted by the next checkpointer of that directory
    (tmp_path / "model_0000011.pth.tmp").write_bytes(b"partial")
    assert all(not f.endswith(".tmp") for f in ck.get_all_checkpoint_files())
    AtomicDetectionCheckpointer(Tiny(), str(tmp_path))
    assert not (tmp_path / "model_0000011.pth.tmp").exists()
    assert (tmp_path / "model_0000003.pth").exists() and (tmp_path / "model_0000007.pth").exists()


def test_resume_with_a_dangling_last_checkpoint_fails_early(tmp_path):
    from instancefcn_d2.config import get_project_cfg
    from instancefcn_d2.engine import check_config

    cfg = get_project_cfg(QUICKSTART, fast_opts(tmp_path) + ["DATASETS.TRAIN", "()"])
    (tmp_path / "model_0000003.pth").write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text("model_0000007.pth")  # e.g. deleted by hand
    with pytest.raises(FileNotFoundError) as e:
        check_config(cfg, resume=True)
    assert "model_0000007.pth" in str(e.value) and "['model_0000003.pth']" in str(e.value)
    (tmp_path / "last_checkpoint").write_text("model_0000003.pth")
    check_config(cfg, resume=True)
