#!/usr/bin/env python
"""Loss-scale and training-scale ablations of the quick start (issue 13, items 2 and 6).

    python tools/quickstart_ablations.py --iters 500 [--only pixel,window] [--jobs 2]

Each ablation is ``train_net.py`` on the quick-start config with a few overrides, the same
seed and budget; the tool writes ``results/quickstart_ablations.json`` (mask and box AR of each,
the overrides, the budget and the machine), which ``tools/render_results.py`` renders.

* ``pixel`` / ``window``: ``MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION`` (the quick start's
  per-pixel mean vs the paper's sum over a window's pixels), same learning rate;
* ``sqrt2_scales`` (= ``pixel``): training scales sqrt(2) apart, as the quick start;
* ``paper_spacing``: training scales 1.5x apart as the paper's (80 * 1.5^k), whose gaps leave
  ~15 % of object sizes positive at no scale with the 2^+-1/4 band;
* ``paper_spacing_wide_band``: the same scales with the band widened to 2^+-log2(1.5)/2, which
  closes the gaps.
The test pyramid is the quick start's (2^1/4 steps) in every run.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml"
PAPER_SPACING = "(80, 120, 180, 270, 405)"
ABLATIONS = {
    "pixel": ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "pixel"],
    "window": ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "window"],
    "paper_spacing": ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "pixel", "INPUT.MIN_SIZE_TRAIN", PAPER_SPACING],
    "paper_spacing_wide_band": ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "pixel", "INPUT.MIN_SIZE_TRAIN",
                                PAPER_SPACING, "MODEL.INSTANCEFCN.POSITIVE_SCALE_LOG2", "0.2925"],
}


def run(name, iters, output_root, train=True):
    out = os.path.join(output_root, name)
    steps = f"({int(iters * 0.8)},)"
    cmd = [sys.executable, "train_net.py", "--config-file", CONFIG, *ABLATIONS[name], "SOLVER.MAX_ITER", str(iters),
           "SOLVER.STEPS", steps, "SOLVER.CHECKPOINT_PERIOD", str(iters), "OUTPUT_DIR", out]
    if train:
        with open(os.path.join(REPO, output_root, f"{name}.log"), "w") as log:
            subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(os.path.join(REPO, out, "proposal_ar.json")) as f:
        ar = json.load(f)
    return name, {"overrides": ABLATIONS[name] + ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps],
                  "mask": ar["segm_proposals"], "box": ar["box_proposals"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--only", default=",".join(ABLATIONS))
    ap.add_argument("--jobs", type=int, default=1, help="ablations trained at once")
    ap.add_argument("--output-root", default="output/ablations")
    ap.add_argument("--out", default="results/quickstart_ablations.json")
    ap.add_argument("--skip-training", action="store_true",
                    help="collect runs already in --output-root (trained by an earlier call with the same --iters)")
    args = ap.parse_args(argv)
    from machine import describe_machine

    machine = describe_machine(gemm_sizes=())  # load average first, before any work
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise SystemExit(f"unknown ablations {unknown}; choose from {list(ABLATIONS)}")
    os.makedirs(os.path.join(REPO, args.output_root), exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(pool.map(lambda n: run(n, args.iters, args.output_root, not args.skip_training), names))
    record = {"what": "class-agnostic AR (percent) on synthetic_val; quick-start config with overrides",
              "config": CONFIG, "budget": f"{args.iters} iterations at batch 1, SEED 42, ImageNet VGG-16 start",
              "command": " ".join(["python", "tools/quickstart_ablations.py", *(argv or sys.argv[1:])]),
              "machine": machine, "trained_in_this_run": not args.skip_training, "runs": runs}
    sys.path.insert(0, REPO)
    from instancefcn_d2.fileio import atomic_write

    atomic_write(os.path.join(REPO, args.out), lambda f: json.dump(record, f, indent=2), "w")
    for name, r in runs.items():
        print(f"{name:26s} mask AR@10/100/1000 " + " / ".join(f"{r['mask'][k]:.1f}" for k in ("AR@10", "AR@100", "AR@1000")))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
