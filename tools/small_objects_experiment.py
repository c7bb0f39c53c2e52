#!/usr/bin/env python
"""Small objects: AR@100 with the quick start's scales vs the scales planned by plan_scales.py.

  python tools/small_objects_experiment.py [--iters 400] [--config-file CFG] [--output-dir output/small_objects]

Generates ``synthetic_small`` (10-40 px objects), plans the scales for its train split with
``tools/plan_scales.py``, then trains the quick-start config (``--config-file``; default the
main command's, ``configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml``) twice with the same
budget (``--iters`` iterations, batch 1, same seed), once as it is and once
with the planned overrides, evaluates both on ``synthetic_small_val`` and writes the figures,
commands and coverage to ``results/small_objects.json``.
"""
import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml"


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main():
    global MACHINE
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    MACHINE = describe_machine(gemm_sizes=())  # load average at the start, before any work
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--config-file", default=CONFIG, help="the quick-start config to plan for and train")
    ap.add_argument("--output-dir", default="output/small_objects")
    ap.add_argument("--results", default="results/small_objects.json")
    args = ap.parse_args()
    out = args.output_dir
    py = sys.executable
    data = ["DATASETS.TRAIN", '("synthetic_small_train",)', "DATASETS.TEST", '("synthetic_small_val",)']
    budget = ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({int(args.iters * 0.8)},)"]

    run([py, "tools/make_synthetic_dataset.py", "--preset", "synthetic_small"])
    planned_yaml = os.path.join(out, "planned.yaml")
    plan_cmd = [py, "tools/plan_scales.py", "--config-file", args.config_file, "--dataset", "synthetic_small_train",
                "--output", planned_yaml, "--json", "--objective", "coverage"]
    print("+", " ".join(plan_cmd), flush=True)
    plan = json.loads(subprocess.run(plan_cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)

    runs = {}
    for name, config in (("quickstart_scales", args.config_file), ("planned_scales", planned_yaml)):
        run_dir = os.path.join(out, name)
        cmd = [py, "train_net.py", "--config-file", config, *data, *budget, "OUTPUT_DIR", run_dir]
        run(cmd)
        with open(os.path.join(REPO, run_dir, "proposal_ar.json")) as f:
            ar = json.load(f)
        runs[name] = {
            "command": " ".join(cmd[1:]),
            "mask": {k: round(ar["segm_proposals"][k], 1) for k in ("AR@10", "AR@100", "AR@1000")},
            "box": {k: round(ar["box_proposals"][k], 1) for k in ("AR@10", "AR@100", "AR@1000")},
        }
        write(args.results, args.config_file, plan_cmd, plan, runs, args.iters)  # after each run: a partial file survives a kill


def write(path, config, plan_cmd, plan, runs, iters):
    result = {
        "config": config,
        "what": "class-agnostic AR (percent) on synthetic_small_val (40 images, 10-40 px objects), "
                "quick-start config with its own scales vs the scales planned by tools/plan_scales.py",
        "budget": f"{iters} iterations at batch 1 each, SEED 42, ImageNet VGG-16 start",
        "machine": MACHINE,
        "plan_command": " ".join(plan_cmd[1:]),
        "plan": plan,
        "runs": runs,
    }
    from instancefcn_d2.fileio import atomic_write

    atomic_write(os.path.join(REPO, path), lambda f: json.dump(result, f, indent=2), "w")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
