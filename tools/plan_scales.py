#!/usr/bin/env python
"""Plan the training / test scales (and a crop) that let InstanceFCN's windows learn and propose
the objects of a dataset, and print them as config overrides.

  python tools/plan_scales.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml \\
      --dataset synthetic_small_train
  python tools/plan_scales.py --config-file my.yaml --dataset mine_train=mine/train.json:mine/images \
      --output configs/mine-planned.yaml
  python tools/plan_scales.py --config-file my.yaml --dataset mine_train --json

``--dataset`` is ``NAME=annotations.json:images_dir`` (as for train_net.py: checked, then
registered), a registered dataset name (this project's, e.g. ``hela_train``), or the path of a
COCO instances JSON (only its boxes and image sizes are read; no images). The
plan: the fewest scales (greedy set cover on a 2^(1/8) grid, instancefcn_d2/scale_planning.py)
that bring >= ``--target`` of the objects into the positive band at some training scale and to
the canonical size at some test scale, with an absolute ``INPUT.CROP`` when the upscaling
would make training inputs longer than ``--max-train-side`` (default: the config's
``INPUT.MAX_SIZE_TRAIN``). Works for one level and for feature pyramids (levels from
``MODEL.INSTANCEFCN.IN_FEATURES``).

Output: YAML to merge with the config (``_BASE_`` points at it; with ``--output FILE`` the path
is relative to FILE, else to the current directory), or with ``--json``:
``{"objective": str, "coverage_before": {"train": f, "test": f}, "coverage_after": {...},
"overrides": {KEY: value}, "reasons": {KEY: why}, "notes": [...]}``.
"""
import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instancefcn_d2  # noqa: E402,F401  (registers the backbones)
import yaml  # noqa: E402
from instancefcn_d2 import add_instancefcn_config  # noqa: E402
from instancefcn_d2.engine import merge_config  # noqa: E402
from instancefcn_d2.fileio import atomic_write  # noqa: E402
from instancefcn_d2.scale_coverage import ObjectSizes, scale_setup_from_config  # noqa: E402
from instancefcn_d2.scale_planning import plan_for_recall, plan_scales  # noqa: E402

from detectron2.config import get_cfg  # noqa: E402


def load_objects(dataset: str) -> ObjectSizes:
    """Object boxes of ``NAME=JSON:DIR``, a registered dataset name or a COCO JSON path."""
    if "=" in dataset:
        from instancefcn_d2.data.cli_datasets import register_dataset_args
        from instancefcn_d2.data.datasets import project_dataset_names

        dataset = register_dataset_args([dataset], reserved=project_dataset_names())[0]
    elif dataset.endswith(".json") or os.path.isfile(dataset):
        if not os.path.isfile(dataset):
            raise FileNotFoundError(f"--dataset {dataset!r}: no such COCO JSON file")
        with open(dataset) as f:
            data = json.load(f)
        images = {im["id"]: im for im in data["images"]}
        dicts = {}
        for a in data.get("annotations", []):
            im = images[a["image_id"]]
            dicts.setdefault(a["image_id"], {"height": im["height"], "width": im["width"], "annotations": []})[
                "annotations"].append(a)  # COCO "bbox" is XYWH_ABS, ObjectSizes' default
        return ObjectSizes.from_dataset_dicts(dicts.values())
    from detectron2.data import DatasetCatalog
    from instancefcn_d2.data import register_project_datasets

    register_project_datasets(names=[dataset])
    if dataset not in DatasetCatalog.list():
        raise KeyError(f"--dataset {dataset!r} is neither a COCO JSON file nor a registered dataset")
    return ObjectSizes.from_dataset_dicts(DatasetCatalog.get(dataset))


def nested(overrides: dict) -> dict:
    """``{"A.B": v}`` -> ``{"A": {"B": v}}``."""
    out = {}
    for key, value in overrides.items():
        node = out
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return out


def to_yaml(plan, config_file: str, output: str = "", dataset: str = "") -> str:
    base = os.path.relpath(os.path.abspath(config_file), os.path.dirname(os.path.abspath(output)) if output else os.getcwd())
    pct = lambda d: f"train {100 * d['train']:.1f}%, test {100 * d['test']:.1f}%"  # noqa: E731
    head = [
        f"# Planned by tools/plan_scales.py for {dataset}. Optimised for {plan.objective}.",
        f"# Objects in the positive band before: {pct(plan.coverage_before)}; after: {pct(plan.coverage_after)}.",
    ] + [f"# {key}: {why}" for key, why in plan.reasons.items()] + [f"# NOTE: {n}" for n in plan.notes]
    body = yaml.safe_dump({"_BASE_": base, **nested(plan.overrides)}, default_flow_style=None, sort_keys=False)
    return "\n".join(head) + "\n" + body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, help="the config to plan for (its model and levels)")
    ap.add_argument("--dataset", required=True,
                    help="NAME=annotations.json:images_dir, a registered dataset name, or a COCO instances JSON path")
    ap.add_argument("--objective", choices=("recall", "coverage"), default="recall",
                    help="recall (default): several magnifications, the same in training and test, window and "
                    "proposal budgets for the objects per image; coverage: the fewest scales that cover each object once")
    ap.add_argument("--scales", type=int, default=5, help="with --objective recall: magnifications, 2^(1/4) apart (default 5)")
    ap.add_argument("--target", type=float, default=0.95, help="fraction of objects to cover (default 0.95)")
    ap.add_argument("--max-train-side", type=int, default=None,
                    help="longest side of a training input (default: the config's INPUT.MAX_SIZE_TRAIN)")
    ap.add_argument("--max-test-side", type=int, default=None,
                    help="cap TEST_MAX_SIZE (default: whatever the planned test scales need)")
    ap.add_argument("--json", action="store_true", help="print the plan as JSON instead of YAML")
    ap.add_argument("--output", default="", help="also write the YAML to this file")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.target <= 1:
        ap.error("--target must be in (0, 1]")

    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    from instancefcn_d2.data.cli_datasets import DatasetArgumentError

    try:
        objs = load_objects(args.dataset)
    except DatasetArgumentError as e:
        ap.error(str(e))
    if len(objs) == 0:
        raise SystemExit(f"--dataset {args.dataset!r} has no (non-crowd) objects with a box: nothing to plan.")
    kw = dict(target=args.target, max_train_side=args.max_train_side, max_test_side=args.max_test_side)
    if args.objective == "recall":
        plan = plan_for_recall(objs, scale_setup_from_config(cfg), num_scales=args.scales,
                               topk_per_scale=cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE,
                               detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE, **kw)
    else:
        plan = plan_scales(objs, scale_setup_from_config(cfg), **kw)
    text = to_yaml(plan, args.config_file, args.output, args.dataset)
    if args.output:
        atomic_write(args.output, lambda f: f.write(text), "w")
    print(json.dumps(plan.as_dict(), indent=2) if args.json else text, end="" if not args.json else "\n")
    for n in plan.notes:
        print(f"WARNING: {n}", file=sys.stderr)
    return plan


if __name__ == "__main__":
    main()
