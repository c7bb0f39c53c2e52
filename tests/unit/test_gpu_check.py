"""tools/gpu_check.py's CPU-safe parts: arguments, the plan, the summary and the record; and
that it stops before any work without a GPU. (The GPU steps themselves run only on a GPU.)"""
import glob
import json
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_plan_covers_every_coco_config_in_order(load_tool):
    gpu_check = load_tool("gpu_check")
    found = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*COCO*.yaml"),
                                                         recursive=True)}
    assert set(gpu_check.COCO_CONFIGS) == found
    steps = gpu_check.plan(gpu_check.parse_args([]))
    kinds = [k for _, k, _ in steps]
    assert kinds == ["pytest"] + ["train"] * (2 * len(found)) + ["benchmark"]
    assert [p[1] for _, k, p in steps if k == "train"] == [False] * len(found) + [True] * len(found)  # fp32, then AMP
    assert [k for _, k, _ in gpu_check.plan(gpu_check.parse_args(["--skip-tests", "--benchmark-rows", ""]))] == \
        ["train"] * (2 * len(found))


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--budget-s", "-1"], ["--configs", "configs/nope.yaml"]])
def test_bad_arguments_are_rejected(load_tool, argv, capsys):
    with pytest.raises(SystemExit):
        load_tool("gpu_check").parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_summary_and_record(load_tool, tmp_path):
    gpu_check = load_tool("gpu_check")
    args = gpu_check.parse_args(["--iters", "5"])
    results = [{"step": "a fp32", "status": "ok", "seconds": 1.25, "detail": "loss 1->0.5"},
               {"step": "b amp", "status": "not run (budget)", "seconds": 0.0}]
    text = gpu_check.format_summary(results)
    assert "a fp32" in text and "not run (budget)" in text and text.endswith("1 of 2 steps ok")
    record = gpu_check.write_record(str(tmp_path / "gpu_check.json"), {"device": "cuda"}, args, results)
    with open(tmp_path / "gpu_check.json") as f:
        assert json.load(f) == record
    assert record["all_ok"] is False and record["settings"]["iters"] == 5
    assert gpu_check.write_record(str(tmp_path / "g.json"), {}, args, results[:1])["all_ok"] is True


def test_stops_before_any_work_without_a_gpu(load_tool, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    with pytest.raises(SystemExit) as e:
        load_tool("gpu_check").main(["--out", str(out), "--output-root", str(tmp_path / "o")])
    assert "needs a CUDA GPU" in str(e.value)
    assert not out.exists() and not (tmp_path / "o").exists()
