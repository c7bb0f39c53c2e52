"""Command line of the peer comparison: a short learning-rate sweep per side (chosen on a split
held out of the training set), then each side's full budget at its chosen lr, on each (train,
test) dataset pair; one results file."""
import argparse
import json
import logging
import os
import sys
import time

from tools.peers.sides import SIDES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SELECT_METRIC = "AR@100"
SMOKE_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128", "MODEL.INSTANCEFCN.TEST_SCALES", "[96]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "128",
    "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "100", "DATALOADER.NUM_WORKERS", "0", "MODEL.WEIGHTS", "",
    "TEST.DETECTIONS_PER_IMAGE", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
]

# The sweep keeps the top 100 of each model's ranked output: AR@100, which chooses the lr, is the
# same as with 1000 (each ranks after NMS and then cuts), and scoring costs less.
SWEEP_OPTS = {"instancefcn": ["TEST.DETECTIONS_PER_IMAGE", "100"],
              "mask_rcnn": ["TEST.DETECTIONS_PER_IMAGE", "100"],
              "rpn": ["MODEL.RPN.POST_NMS_TOPK_TEST", "100"]}

logger = logging.getLogger("instancefcn_d2.peers")


def parse_datasets(items):
    """``["train:test", ...]`` -> ``[(train, test), ...]``."""
    pairs = []
    for item in items:
        train, sep, test = item.partition(":")
        if not sep or not train or not test:
            raise SystemExit(f"--datasets: expected TRAIN:TEST (e.g. synthetic_train:synthetic_val), got {item!r}")
        pairs.append((train, test))
    return pairs


def check_datasets(dataset_args, pairs):
    """Register the ``--dataset`` COCO JSONs, then check that every name of ``pairs`` is a dataset."""
    from detectron2.data import DatasetCatalog

    from instancefcn_d2.data.cli_datasets import DatasetArgumentError, register_dataset_args
    from instancefcn_d2.data.datasets import project_dataset_names

    try:
        register_dataset_args(dataset_args, reserved=project_dataset_names())
    except DatasetArgumentError as e:
        raise SystemExit(str(e)) from None
    known = set(DatasetCatalog.list()) | set(project_dataset_names())
    unknown = sorted({name for pair in pairs for name in pair} - known)
    if unknown:
        raise SystemExit(f"--datasets names {unknown}, which are not datasets: name this project's "
                         "(e.g. synthetic_train) or register a COCO JSON with --dataset NAME=annotations.json:images_dir")


def parse_lrs(items):
    """``["mask_rcnn=0.005,0.01", ...]`` -> ``{"mask_rcnn": (0.005, 0.01)}``."""
    out = {}
    for item in items or ():
        side, sep, values = item.partition("=")
        if not sep or side not in SIDES:
            raise SystemExit(f"--lrs: expected SIDE=LR,LR,... with SIDE among {list(SIDES)}, got {item!r}")
        try:
            out[side] = tuple(float(v) for v in values.split(",") if v)
        except ValueError:
            raise SystemExit(f"--lrs: {item!r} has a value that is not a number") from None
        if not out[side]:
            raise SystemExit(f"--lrs: {item!r} names no learning rate")
    return out


def side_cfg(side, train, test, iters, lr, output_dir, opts):
    """The side's config on (train, test), with its schedule (steps, warm-up) scaled to ``iters``."""
    from instancefcn_d2.config import get_project_cfg

    cfg = get_project_cfg(os.path.join(REPO, SIDES[side].config), opts)
    s = cfg.SOLVER
    ratio = iters / s.MAX_ITER
    cfg.merge_from_list([
        "DATASETS.TRAIN", (train,), "DATASETS.TEST", (test,), "SOLVER.MAX_ITER", iters,
        "SOLVER.STEPS", tuple(sorted({round(x * ratio) for x in s.STEPS} & set(range(1, iters)))),
        "SOLVER.WARMUP_ITERS", round(s.WARMUP_ITERS * ratio), "SOLVER.CHECKPOINT_PERIOD", iters,
        "SOLVER.BASE_LR", lr, "OUTPUT_DIR", output_dir,
    ])
    cfg.freeze()
    return cfg


def images_seen(side, opts):
    from instancefcn_d2.config import get_project_cfg

    cfg = get_project_cfg(os.path.join(REPO, SIDES[side].config), opts)
    return cfg.SOLVER.MAX_ITER * cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_BATCH


def compare(sides, train, test, args, lrs, out, save):
    """Sweep then full budget for each side on one dataset pair, into ``out["sides"]``;
    ``save()`` after each side, so that an interrupted run keeps the sides it finished."""
    from tools.peers.training import train_and_score

    from instancefcn_d2.data import register_project_datasets
    from tools.peers.holdout import register_holdout_split

    out.update({"train": train, "test": test, "sides": {}})
    sweep_train, sweep_test = train, test
    if args.sweep_iters and args.sweep_holdout:
        register_project_datasets(names=[train])  # a project set registers on first use
        sweep_train, sweep_test, n_fit, n_holdout = register_holdout_split(train, args.sweep_holdout)
        out["sweep_split"] = {"train": sweep_train, "images": n_fit, "held_out": sweep_test, "held_out_images": n_holdout}
    for side in sides:
        spec = SIDES[side]
        sweep = []
        for lr in lrs.get(side, spec.lrs) if args.sweep_iters else ():
            cfg = side_cfg(side, sweep_train, sweep_test, args.sweep_iters, lr,
                           os.path.join(args.output_root, test, side, f"sweep_lr{lr:g}"), args.opts + SWEEP_OPTS[side])
            r = train_and_score(cfg, spec.peer)
            task = "mask" if spec.select == "segm_proposals" else "box"
            sweep.append({"lr": lr, SELECT_METRIC: None if r["diverged"] else r[task][SELECT_METRIC],
                          "train_s": r["train_s"], "diverged": r["diverged"]})
        scored = [s for s in sweep if s[SELECT_METRIC] is not None]
        if sweep and not scored:
            raise SystemExit(f"{side}: every lr of the sweep diverged ({[s['lr'] for s in sweep]}); pass --lrs {side}=...")
        lr = max(scored, key=lambda s: s[SELECT_METRIC])["lr"] if scored else None
        cfg = side_cfg(side, train, test, args.iters, lr if lr is not None else _config_lr(side, args.opts),
                       os.path.join(args.output_root, test, side), args.opts)
        r = train_and_score(cfg, spec.peer)
        if r["diverged"]:
            raise SystemExit(f"{side}: the full run diverged at lr {cfg.SOLVER.BASE_LR}")
        out["sides"][side] = {"config": spec.config, "note": spec.note, "lr": cfg.SOLVER.BASE_LR,
                              "lr_chosen_by_sweep": bool(scored), "sweep": sweep,
                              "mask": r["mask"], "box": r["box"], "train_s": r["train_s"],
                              "infer_s_per_image": r["infer_s_per_image"]}
        logger.info(f"{test} / {side}: lr {cfg.SOLVER.BASE_LR}, mask {r['mask']}, box {r['box']}, "
                    f"train {r['train_s']} s, {r['infer_s_per_image']} s / image")
        save()
    if args.equal_time and {"instancefcn", "mask_rcnn"} <= set(out["sides"]):
        out["equal_time"] = at_equal_time(out["sides"], train, test, args)
        save()
    return out


def at_equal_time(sides, train, test, args):
    """InstanceFCN again at its chosen lr, for as many iterations as fit in Mask R-CNN's
    measured training time (the issue's goal compares at equal training time; the table at
    equal images seen)."""
    from tools.peers.training import train_and_score

    ifcn, peer = sides["instancefcn"], sides["mask_rcnn"]
    iters = max(1, round(args.iters * peer["train_s"] / ifcn["train_s"]))
    cfg = side_cfg("instancefcn", train, test, iters, ifcn["lr"],
                   os.path.join(args.output_root, test, "instancefcn_equal_time"), args.opts)
    r = train_and_score(cfg, SIDES["instancefcn"].peer)
    if r["diverged"]:
        raise SystemExit(f"instancefcn: the equal-time run diverged at lr {ifcn['lr']}")
    logger.info(f"{test} / instancefcn at mask_rcnn's training time: {iters} iterations, mask {r['mask']}")
    return {"side": "instancefcn", "against": "mask_rcnn", "iters": iters, "lr": ifcn["lr"],
            "rule": f"iterations = {args.iters} x Mask R-CNN's / InstanceFCN's training seconds, the schedule scaled",
            "mask": r["mask"], "box": r["box"], "train_s": r["train_s"], "infer_s_per_image": r["infer_s_per_image"]}


def _config_lr(side, opts):
    from instancefcn_d2.config import get_project_cfg

    return get_project_cfg(os.path.join(REPO, SIDES[side].config), opts).SOLVER.BASE_LR


def build_parser(doc):
    from instancefcn_d2.data.cli_datasets import add_dataset_argument

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["synthetic_train:synthetic_val"],
                    help="TRAIN:TEST registered dataset pairs, each compared on its own (default: the quick start's)")
    add_dataset_argument(ap)  # own COCO JSONs, as train_net.py's --dataset
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    ap.add_argument("--iters", type=int, default=None, help="full budget in iterations (default: the configs', which must agree)")
    ap.add_argument("--sweep-iters", type=int, default=80, help="iterations per lr of the sweep (0: no sweep, the configs' lr)")
    ap.add_argument("--sweep-holdout", type=float, default=0.2,
                    help="fraction of the training images (the last ones) the sweep holds out and chooses on; "
                         "0: it chooses on the test set")
    ap.add_argument("--no-equal-time", dest="equal_time", action="store_false",
                    help="skip InstanceFCN's extra run at Mask R-CNN's training time")
    ap.add_argument("--lrs", nargs="*", metavar="SIDE=LR,LR", help="override a side's swept learning rates")
    ap.add_argument("--output-root", default="output/peers")
    ap.add_argument("--out", default="results/peers.json")
    ap.add_argument("--smoke", action="store_true", help="tiny images, a few iterations, no ImageNet weights (CI)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every side (e.g. input sizes)")
    return ap


def main(argv=None, doc=None):
    args = build_parser(doc).parse_args(argv)
    args.opts = (SMOKE_OPTS if args.smoke else []) + list(args.opts)
    if not 0 <= args.sweep_holdout < 1:
        raise SystemExit(f"--sweep-holdout: a fraction in [0, 1), got {args.sweep_holdout}")
    pairs = parse_datasets(args.datasets)
    lrs = parse_lrs(args.lrs)
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    import instancefcn_d2  # noqa: F401  (detectron2 shims first)
    from detectron2.utils.logger import setup_logger

    from instancefcn_d2.fileio import atomic_write

    check_datasets(args.dataset, pairs)  # before any work: a bad name or file costs nothing

    machine = describe_machine("cpu", gemm_sizes=(256,) if args.smoke else None)  # load average first
    for name in ("detectron2", "instancefcn_d2", "fvcore"):
        setup_logger(name=name)
    seen = {side: images_seen(side, args.opts) for side in args.sides}
    if args.iters is None:
        if len({n for n, _ in seen.values()}) != 1:
            raise SystemExit(f"the configs see different numbers of images ({seen}): pass --iters")
        args.iters = next(iter(seen.values()))[0] // next(iter(seen.values()))[1]
    if len({b for _, b in seen.values()}) != 1:
        raise SystemExit(f"the configs' IMS_PER_BATCH differ ({seen}): equal images seen needs equal batches")
    batch = next(iter(seen.values()))[1]
    start = time.perf_counter()
    record = {
        "command": "python tools/peer_comparison.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "metric": "class-agnostic AR (%), IoU 0.50:0.05:0.95, SegmentProposalEvaluator; mask and box",
        "budget": {"iters": args.iters, "ims_per_batch": batch, "images_seen": args.iters * batch},
        "sweep": {"iters": args.sweep_iters, "images_seen": args.sweep_iters * batch,
                  "rule": f"highest {SELECT_METRIC} (mask AR for mask models, box AR for RPN) after the short budget, "
                          + (f"trained on the first {1 - args.sweep_holdout:.0%} of the training images and scored on the "
                             "last ones (held out; the test set is not looked at)" if args.sweep_holdout else
                             "scored on the test set (no held-out split)")
                          + "; the same rule for every side; the sweep keeps each model's top 100 (its AR@100 unchanged)"},
        "runs": [], "complete": False,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def save():
        record["wall_clock_s"] = round(time.perf_counter() - start, 1)
        atomic_write(args.out, lambda f: (json.dump(record, f, indent=2), f.write("\n")), "w")

    for train, test in pairs:
        record["runs"].append({})
        compare(args.sides, train, test, args, lrs, record["runs"][-1], save)
    record["complete"] = True
    save()
    print(f"Wrote {args.out}; python tools/render_results.py renders it into RESULTS.md and README.md")
    return record
