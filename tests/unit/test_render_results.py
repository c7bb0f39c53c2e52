"""RESULTS.md's figures are the results files': its marked blocks equal what
tools/render_results.py renders from the committed results/*.json; rendering itself checked
on hand-made records with hand-formatted expectations."""
import json
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tools"))
import render_results as R  # noqa: E402

MACHINE = {"cpu_model": "Test CPU 9000", "logical_cores": 2, "torch_num_threads": 2,
           "load_average_at_start": [1.5, 0.7, 0.3], "load_per_core": 0.75, "idle": False,
           "torch_version": "2.14.1", "detectron2_version": "0.6", "python_version": "3.11.7",
           "git_commit": "a" * 40, "device": "cpu", "gpu_name": None, "gemm_peak_gflops_per_s": 101.26}
AR = {"AR@10": 45.8974358974359, "AR@100": 50.44871794871795, "AR@1000": 51.34615384615384,
      "ARs@1000": 26.129032258064516, "ARm@1000": None, "ARl@1000": 70.0}


def record(k1=True, variants=True):
    run = {"config": "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml", "mask": AR,
           "box": {**AR, "AR@10": 43.07}, "infer_s_per_image": 1.234, "stages_s": {"train": 503.04, "eval": 85.0,
                                                                                  "pictures": 25.5}}
    rec = {"command": "python tools/quickstart.py --with-k1-ablation", "dataset": "synthetic_val",
           "machine": MACHINE, "runs": {"k5": run}, "wall_clock_s": 620.4}
    if k1:
        rec["runs"]["k1"] = {**run, "mask": {**AR, "AR@10": 0.0, "AR@100": 0.12820512820512}}
    if variants:
        rec["variants"] = {"vgg16_pyramid": {"config": run["config"], "AR@10": AR["AR@10"], "AR@100": AR["AR@100"],
                                             "AR@1000": AR["AR@1000"], "train_s": 503.04, "infer_s_per_image": 1.234}}
    return rec


def test_results_md_is_what_the_committed_results_render():
    with open(os.path.join(REPO, "RESULTS.md")) as f:
        text = f.read()
    blocks = R.render_blocks(os.path.join(REPO, "results"))
    assert "quickstart" in blocks  # results/quickstart.json is committed
    assert R.fill(text, blocks) == text, "RESULTS.md is stale: run python tools/render_results.py"


def test_quickstart_tables_hand_formatted():
    blocks = R.quickstart_blocks(record())
    main = blocks["quickstart"].splitlines()
    assert main[0] == ("Machine: Test CPU 9000, 2 logical cores, 2 torch threads; GEMM peak 101.3 GFLOP/s; "
                       "load average at start 1.50 / 0.70 / 0.30 (NOT idle: other work shared the cores, timings "
                       "are not idle-machine figures); torch 2.14.1, detectron2 0.6; commit " + "a" * 40 + ".")
    assert "| masks (k = 5) | 45.9 | 50.4 | 51.3 | 26.1 | – | 70.0 |" in main
    assert "| boxes (k = 5) | 43.1 | 50.4 | 51.3 | 26.1 | – | 70.0 |" in main
    assert main[-1] == ("Seconds: training 503.0, evaluation 85.0 (1.23 per image), pictures 25.5; "
                        "the whole command 620.4 (set-up not included).")
    assert "| k = 1 (plain FCN) | 0.0 | 0.1 | 51.3 | 26.1 | – | 70.0 |" in blocks["quickstart_k1"].splitlines()
    assert ("| `vgg16_pyramid` | `configs/quickstart/InstanceFCN-VGG16-synthetic.yaml` | 45.9 | 50.4 | 51.3 | 503.0 "
            "| 1.23 |") in blocks["quickstart_variants"].splitlines()
    idle = R.quickstart_blocks({**record(), "machine": {**MACHINE, "idle": True}})["quickstart"]
    assert "(idle)" in idle and "NOT idle" not in idle


def test_runs_without_ablation_or_variants_and_old_files_render_no_figures():
    blocks = R.quickstart_blocks(record(k1=False, variants=False))
    assert "--with-k1-ablation" in blocks["quickstart_k1"] and "|" not in blocks["quickstart_k1"]
    assert "--variants" in blocks["quickstart_variants"] and "|" not in blocks["quickstart_variants"]
    old = {"k5": AR, "wall_clock_s": 701.0}  # the hand-assembled format before tools/quickstart.py wrote it
    assert R.quickstart_blocks(old) == {n: R.PENDING for n in R.QUICKSTART_BLOCKS}


def test_ranking_table_hand_formatted():
    rec = {"command": "python tools/ranking_experiment.py --weights w.pth", "config": "c.yaml",
           "dataset": "synthetic_val", "images": 40, "windows_per_image": 884.4, "machine": MACHINE,
           "select_s_per_image": 0.3512, "variants": [
               {"name": "mask 0.5", "keys": {"NMS_TYPE": "mask", "SCORE": "objectness", "NMS_THRESH": 0.5},
                "mask": {"AR@10": 50.06, "AR@100": 52.44, "AR@1000": 52.44},
                "box": {"AR@10": 42.7, "AR@100": 50.8, "AR@1000": None},
                "s_per_image": 0.40741, "render_s_per_image": 0.05, "nms_s_per_image": 0.01283}]}
    lines = R.ranking_block(rec).splitlines()
    assert lines[-1] == "No `box 0.8` row: no default chosen."
    lines = lines[:-2]
    assert lines[0].startswith("Machine: Test CPU 9000")
    assert "`c.yaml` on `synthetic_val` (40 images, 884 windows per image)" in lines[2]
    assert "selection (0.351)" in lines[2]
    assert lines[-1] == ("| mask 0.5 | NMS_TYPE mask, SCORE objectness, NMS_THRESH 0.5 | 50.1 | 52.4 | 52.4 | 42.7 "
                         "| 50.8 | – | 0.407 | 0.0128 |")
    assert "tools/ranking_experiment.py" in R.ranking_block({"what": "an older format"})
    base = {"name": "box 0.8", "mask": {"AR@10": 44.4, "AR@100": 57.2, "AR@1000": 57.4}}
    rows = [base, {"name": "a", "mask": {"AR@10": 47.0, "AR@100": 57.5, "AR@1000": 57.44}},
            {"name": "b", "mask": {"AR@10": 51.1, "AR@100": 56.0, "AR@1000": 60.6}},
            {"name": "c", "mask": {"AR@10": 48.0, "AR@100": 57.3, "AR@1000": 57.4}}]
    assert R.ranking_choice(rows) == ("Variants that raise mask AR@10 and AR@100 over `box 0.8` without "
                                      "lowering AR@1000: `a`, `c`; the highest AR@10 among them: **`c`**.")
    assert R.ranking_choice(rows[:1] + rows[2:3]).startswith("No variant raises")


def test_generic_results_file_one_row_per_metrics_dict():
    rec = {"command": "python tools/x.py", "machine": MACHINE,
           "budget": {"iterations": 400},
           "eval": {"seen": {"AR@100": 40.04, "AR@1000": None}, "unseen": {"AR@100": 12.96, "ARs@1000": 3.0}},
           "plan": {"coverage_after": {"train": 0.9747}}}
    lines = R.generic_block(rec).splitlines()
    assert lines[0].startswith("Machine: Test CPU 9000") and lines[2] == "`python tools/x.py`"
    listed = R.generic_block({"rows": [{"name": "default", "AR@100": 1.25}, {"AR@100": 2.0}]}).splitlines()
    assert listed[0] == "Machine: not recorded in this file."
    assert listed[-2:] == ["| rows / default | 1.2 |", "| rows / 1 | 2.0 |"]
    assert lines[4:] == ["|  | iterations | AR@100 | AR@1000 | ARs@1000 | train |",
                         "| --- | --- | --- | --- | --- | --- |",
                         "| budget | 400 | – | – | – | – |",
                         "| eval / seen | – | 40.0 | – | – | – |",
                         "| eval / unseen | – | 13.0 | – | 3.0 | – |",
                         "| plan / coverage_after | – | – | – | – | 97.5 |"]  # fractions shown in percent


def test_check_rewrite_and_missing_blocks(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "quickstart.json").write_text(json.dumps(record()))
    for name in os.listdir(os.path.join(REPO, "results")):  # the other blocks of RESULTS.md need their files
        if name.endswith(".json") and name not in ("quickstart.json", "benchmark.json"):
            shutil.copy(os.path.join(REPO, "results", name), results)
    md = tmp_path / "RESULTS.md"
    shutil.copy(os.path.join(REPO, "RESULTS.md"), md)
    args = ["--markdown", str(md), "--results-dir", str(results)]
    assert R.main(args + ["--check"]) == 1  # committed RESULTS.md vs another record: stale
    assert R.main(args) == 0 and R.main(args + ["--check"]) == 0
    text = md.read_text()
    assert "| masks (k = 5) | 45.9 | 50.4 |" in text and "## Ablation on k" in text  # prose kept

    (results / "new_experiment.json").write_text(json.dumps({"machine": MACHINE, "ar": {"AR@100": 1.0}}))
    with pytest.raises(SystemExit, match="results without a block.*BEGIN new_experiment"):
        R.main(args + ["--check"])
    md.write_text(text + "\n<!-- BEGIN new_experiment -->\n<!-- END new_experiment -->\n"
                  "<!-- BEGIN no_such_results -->\n<!-- END no_such_results -->\n")
    with pytest.raises(SystemExit, match="no_such_results.*no results file"):
        R.main(args)


def test_readme_figures_are_what_the_committed_results_render():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    assert "<!-- BEGIN quickstart_variants -->" in text
    assert R.fill(text, R.render_blocks(os.path.join(REPO, "results")), every_block=False) == text


def _float(v):
    return None if v is None else float(v)


def test_peers_sentence_reads_the_comparison():
    """Who is higher at each AR and size, and the speeds, read from the record (hand-made)."""
    def side(mask, box, train_s, infer_s, lr):
        keys = ["AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]
        return {"config": "c.yaml", "note": "", "lr": lr, "lr_chosen_by_sweep": True,
                "sweep": [{"lr": lr, "AR@100": 1.0, "train_s": 1.0, "diverged": False},
                          {"lr": lr * 2, "AR@100": None, "train_s": 0.5, "diverged": True}],
                "mask": dict(zip(keys, map(_float, mask))) if mask else None, "box": dict(zip(keys, map(_float, box))),
                "train_s": train_s, "infer_s_per_image": infer_s}

    rec = {"command": "python tools/peer_comparison.py", "machine": MACHINE, "metric": "AR",
           "budget": {"iters": 600, "ims_per_batch": 1, "images_seen": 600},
           "sweep": {"iters": 80, "images_seen": 80, "rule": "best AR@100"},
           "runs": [{"train": "t", "test": "v", "sides": {
               "instancefcn": side([40, 50, 60, None, 55, 70], [30, 40, 50, None, 45, 60], 100.0, 0.3, 0.015),
               "mask_rcnn": side([45, 50, 55, None, 60, 65], [35, 45, 55, None, 50, 65], 120.0, 0.9, 0.005),
               "rpn": side(None, [20, 45, 60, None, 50, 70], 80.0, 0.1, 0.01)}}]}
    blocks = R.peers_blocks(rec)
    text = blocks["peers_summary"]
    assert ("against Mask R-CNN (class-agnostic), InstanceFCN's mask AR is AR@10 lower (40.0 vs 45.0), "
            "AR@100 equal (50.0 vs 50.0), AR@1000 higher (60.0 vs 55.0), medium lower (55.0 vs 60.0), "
            "large higher (70.0 vs 65.0)") in text  # small: no ground truth, left out
    assert "it trained in 100.0 s vs 120.0 s and infers in 0.30 s vs 0.90 s per image" in text
    assert "against RPN alone, InstanceFCN's box AR is AR@10 higher (30.0 vs 20.0)" in text
    assert "| RPN alone | `c.yaml` | 0.01 | – | – | – | – | – | – | 20.0 | 45.0 | 60.0 | – | 50.0 | 70.0 | 80.0 | 0.10 |" \
        in blocks["peers"]
    assert "| Mask R-CNN (class-agnostic) | 0.01 | diverged | 0.5 |  |" in blocks["peers"]
def test_coco_overfit_one_row_per_run_hand_formatted():
    common = ["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.00125", "SOLVER.MAX_ITER", "200"]
    run = {"config": "configs/X-COCO.yaml", "seconds": 101.26, "git_commit": "a" * 40,
           "pairing": {"mask_loss_normalization": "pixel", "clip_gradients": "norm 10.0"}, "mask_ar": {"AR@10": 1.25, "AR@100": 20.04, "AR@1000": None},
           "losses": {"loss_objectness": {"start": 0.6931, "end": 0.2}, "loss_mask": {"start": 153.44, "end": 140.0}},
           "learned": {"loss_objectness": True, "loss_mask": False}}
    rec = {"command": "python tools/coco_overfit.py", "machine": MACHINE,
           "settings": {"iterations": 200, "ims_per_batch": 1, "lr_rule": "linear", "shorter_side": 160,
                        "max_size": 256, "learned_if_end_below_start_times": 0.75},
           "runs": {"a": {**run, "overrides": common},
                    "b": {**run, "overrides": common + ["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN"],
                          "git_commit": "b" * 40}}}
    lines = R.coco_overfit_block(rec).splitlines()
    assert lines[0].startswith("Machine: Test CPU 9000") and lines[2].startswith("`python tools/coco_overfit.py`: 200 ")
    assert lines[-4:] == [
        "| `a` | `configs/X-COCO.yaml` | pixel | norm 10.0 | 0.00125 | – | 0.693 → 0.2 | 153 → 140 | yes / NO "
        "| 1.2 | 20.0 | – | 101.3 |",
        "| `b` | `configs/X-COCO.yaml` | pixel | norm 10.0 | 0.00125 | MODEL.WEIGHTS '', MODEL.RESNETS.NORM GN "
        "| 0.693 → 0.2 | 153 → 140 | yes / NO | 1.2 | 20.0 | – | 101.3 |",
        "", f"`b` ran at commit {'b' * 40} (same machine, same settings)."]
    assert "python tools/coco_overfit.py" in R.coco_overfit_block({"runs": {}})


def test_real_data_block_reads_settings_and_judges_the_goal():
    hand_cmd = ("train_net.py --config-file c.yaml INPUT.CROP.SIZE (96, 96) INPUT.MIN_SIZE_TRAIN (200, 400) "
                "MODEL.INSTANCEFCN.TEST_SCALES (640, 800) MODEL.INSTANCEFCN.TOPK_PER_SCALE 1000")
    run = lambda m, b, t, **kw: {"mask": {"AR@10": 1.0, "AR@100": m, "AR@1000": 60.0},  # noqa: E731
                                 "box": {"AR@100": b}, "seconds": {"train (process)": t, "evaluate (process)": 9.0},
                                 "inference_s_per_image": 9.0,
                                 "commit": "b" * 40, **kw}
    rec = {"what": "AR", "budget": "600 iterations", "machine": MACHINE, "sets": {"hela": {
        "what": "nuclei", "plan_overrides": {"INPUT.CROP.SIZE": "[78, 78]", "INPUT.CROP.AROUND_OBJECT": "True",
                                             "INPUT.MIN_SIZE_TRAIN": "[100, 200]",
                                             "MODEL.INSTANCEFCN.TEST_SCALES": "[700]",
                                             "MODEL.INSTANCEFCN.TOPK_PER_SCALE": "500"},
        "runs": {"planned": run(27.0, 30.0, 60.0, eval_command="train_net.py --config-file out/planned.yaml",
                                train_log={"seconds": 50, "s_per_iter": 0.08}),  # the trainer's clock first
                 "hand-picked a": run(30.0, 31.0, 100.0, train_command=hand_cmd, eval_command=hand_cmd),
                 "hand-picked a model, planned test": run(40.0, 41.0, None, eval_command=hand_cmd),
                 "hand-picked b": run(20.0, 21.0, 100.0, eval_command="train_net.py")}}}}
    lines = render_real_data(rec).splitlines()
    assert lines[0].startswith("Machine: Test CPU 9000")
    assert ("| planned | 78 | on an object | 100,200 | 700 | 500 | 1.0 | 27.0 | 60.0 | 30.0 | 50 | 9.0 | bbbbbbb |"
            in lines)
    assert ("| hand-picked a | 96 | anywhere | 200,400 | 640,800 | 1000 | 1.0 | 30.0 | 60.0 | 31.0 | 100.0 | 9.0 "
            "| bbbbbbb |" in lines)
    assert ("| hand-picked b | config | anywhere | config | config | config | 1.0 | 20.0 | 60.0 | 21.0 | 100.0 | 9.0 "
            "| bbbbbbb |" in lines)
    # The crossed run does not count as a hand-picked model; (100^2 + 200^2) / (200^2 + 400^2) = 0.25.
    assert lines[-1] == ("Planned vs the best hand-picked run (`hand-picked a`): mask AR@100 90.0 %, training "
                         "time 0.50 x, training input area per iteration 0.25 x (goal: >= 90 % at no larger "
                         "training input: met).")
    rec["sets"]["hela"]["runs"]["planned"]["mask"]["AR@100"] = 26.9
    assert render_real_data(rec).splitlines()[-1].endswith("NOT met).")
    # A second seed of a setup: its runs are rows of their own, and the verdict takes each
    # setup's mean: planned (26.9 + 33.1) / 2 = 30 against a's (30 + 34) / 2 = 32 (b stays behind).
    runs = rec["sets"]["hela"]["runs"]
    runs["planned seed 7"] = run(33.1, 30.0, 60.0, eval_command="train_net.py --config-file out/planned.yaml")
    runs["hand-picked a seed 7"] = run(34.0, 31.0, 100.0, train_command=hand_cmd, eval_command=hand_cmd)
    lines = render_real_data(rec).splitlines()
    assert any(line.startswith("| planned seed 7 | 78 |") for line in lines)
    assert lines[-1].startswith("Planned vs the best hand-picked run (`hand-picked a`): mask AR@100 93.8 % (means over "
                                "seeds; per seed: planned 26.9 / 33.1, `hand-picked a` 30.0 / 34.0), training time 0.50 x")
    assert lines[-1].endswith(": met).")


def test_real_data_file_of_another_model_renders_as_its_own_block(tmp_path):
    """results/real_data_<model>.json (tools/real_data_experiment.py --config-file ...) renders
    through the real-data renderer as block ``real_data_<model>``, not as a generic dump."""
    rec = json.loads(open(os.path.join(REPO, "results", "real_data.json")).read())
    (tmp_path / "real_data_vgg16.json").write_text(json.dumps(rec))
    blocks = R.render_blocks(str(tmp_path))
    assert set(blocks) == {"real_data_vgg16"} and blocks["real_data_vgg16"] == render_real_data(rec)
    assert "real_data_experiment.py" in render_real_data({"runs": {}})


def render_real_data(rec):
    from real_data_block import real_data_block

    return real_data_block(rec, R.table, R.machine_line)
