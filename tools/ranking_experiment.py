#!/usr/bin/env python
"""Ranking and suppression: one trained checkpoint scored with every NMS_TYPE / SCORE variant.

  PYTHONPATH=$PWD flock /tmp/heavy.lock python tools/ranking_experiment.py \\
      --weights output/rank_qs/model_final.pth [--config-file CFG] [--results results/ranking.json]

The model runs once per test image (backbone, heads, window selection: the part every variant
shares); each variant then renders the same selected windows with its own
``proposals_from_windows`` arguments (box NMS at 0.8 is the paper's and today's default; mask
NMS at a few IoU thresholds; Matrix NMS linear / gaussian; each with and without maskness; gentler
gaussian decays with maskness) and
is scored by ``SegmentProposalEvaluator`` (class-agnostic mask and box AR, pycocotools), as
``train_net.py --eval-only`` would with that variant's keys. Seconds per image: the shared
selection's mean plus the variant's own rendering (suppression, ranking, pasting) mean; the
suppression alone is timed too. Writes ``results/ranking.json`` (machine, commit, command);
``python tools/render_results.py`` renders it into RESULTS.md.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml"
AR_KEYS = ("AR@10", "AR@100", "AR@1000")

# name -> proposals_from_windows keyword arguments (MODEL.INSTANCEFCN keys in lower case).
VARIANTS = {
    "box 0.8": {"nms_type": "box", "nms_thresh": 0.8},
    "box 0.8 + maskness": {"nms_type": "box", "nms_thresh": 0.8, "score": "objectness_maskness"},
    "mask 0.5": {"nms_type": "mask", "nms_thresh": 0.5},
    "mask 0.7": {"nms_type": "mask", "nms_thresh": 0.7},
    "mask 0.5 + maskness": {"nms_type": "mask", "nms_thresh": 0.5, "score": "objectness_maskness"},
    "mask 0.7 + maskness": {"nms_type": "mask", "nms_thresh": 0.7, "score": "objectness_maskness"},
    "matrix linear": {"nms_type": "matrix", "matrix_nms_kernel": "linear"},
    "matrix gaussian": {"nms_type": "matrix", "matrix_nms_kernel": "gaussian"},
    "matrix linear + maskness": {"nms_type": "matrix", "matrix_nms_kernel": "linear",
                                 "score": "objectness_maskness"},
    "matrix gaussian + maskness": {"nms_type": "matrix", "matrix_nms_kernel": "gaussian",
                                   "score": "objectness_maskness"},
    # Gentler decays: duplicates sink below the distinct objects but stay within the top 100.
    "matrix gaussian sigma 1 + maskness": {"nms_type": "matrix", "matrix_nms_kernel": "gaussian",
                                           "matrix_nms_sigma": 1.0, "score": "objectness_maskness"},
    "matrix gaussian sigma 0.5 + maskness": {"nms_type": "matrix", "matrix_nms_kernel": "gaussian",
                                             "matrix_nms_sigma": 0.5, "score": "objectness_maskness"},
    # Box NMS keeps the paper's set; Matrix NMS re-ranks it (cost bounded by the proposal cap).
    "box 0.8, matrix linear + maskness": {"nms_type": "box_matrix", "nms_thresh": 0.8, "matrix_nms_kernel": "linear",
                                          "score": "objectness_maskness"},
    "box 0.8, matrix gaussian + maskness": {"nms_type": "box_matrix", "nms_thresh": 0.8,
                                            "matrix_nms_kernel": "gaussian", "score": "objectness_maskness"},
    "box 0.8, matrix gaussian sigma 0.5 + maskness": {"nms_type": "box_matrix", "nms_thresh": 0.8,
                                                      "matrix_nms_kernel": "gaussian", "matrix_nms_sigma": 0.5,
                                                      "score": "objectness_maskness"},
}


def variant_keys(kwargs):
    """The config overrides that select a variant (what a user sets in a YAML)."""
    keys = {"NMS_TYPE": kwargs["nms_type"], "SCORE": kwargs.get("score", "objectness")}
    if "nms_thresh" in kwargs:
        keys["NMS_THRESH"] = kwargs["nms_thresh"]
    if kwargs["nms_type"] in ("matrix", "box_matrix"):
        keys["MATRIX_NMS_KERNEL"] = kwargs["matrix_nms_kernel"]
        if kwargs["matrix_nms_kernel"] == "gaussian":
            keys["MATRIX_NMS_SIGMA"] = kwargs.get("matrix_nms_sigma", 2.0)
    return keys


def select_all(model, loader):
    """Run the shared part once per image: ``[(inputs, selected windows)]`` and its seconds per image."""
    import torch

    selected, seconds = [], 0.0
    with torch.no_grad():
        for inputs in loader:
            t0 = time.perf_counter()
            sel = model.select_windows(inputs)
            seconds += time.perf_counter() - t0
            selected.append((inputs, sel))
    return selected, seconds / max(1, len(selected))


def score_variant(model, selected, evaluator, kwargs):
    """Render every image's windows with ``kwargs``, score them; ``(results, render s, nms s)``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from instancefcn_d2.inference import proposals_from_windows

    common = {"mask_threshold": model.mask_threshold, "max_proposals": model.detections_per_image,
              "mask_format": model.mask_format}
    evaluator.reset()
    render = 0.0
    with torch.no_grad():
        for inputs, sel in selected:
            t0 = time.perf_counter()
            outs = [{"instances": proposals_from_windows(w, **common, **kwargs)} for w in sel]
            render += time.perf_counter() - t0
            evaluator.process(inputs, outs)
        # The suppression and ranking alone (record_function "instancefcn.nms"), on a second pass.
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _, sel in selected:
                for w in sel:
                    proposals_from_windows(w, **common, **kwargs)
    nms_us = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "instancefcn.nms")
    n = max(1, len(selected))
    return evaluator.evaluate(), render / n, nms_us / 1e6 / n


def main(argv=None):
    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    from instancefcn_d2.data.cli_datasets import add_dataset_argument, register_dataset_args
    from instancefcn_d2.data.datasets import project_dataset_names

    machine = describe_machine(gemm_sizes=())  # the load average as the run found it
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default=CONFIG)
    ap.add_argument("--weights", required=True, help="the trained checkpoint (MODEL.WEIGHTS)")
    ap.add_argument("--results", default="results/ranking.json")
    ap.add_argument("--variants", default="", help="comma list of variant names (default: all)")
    add_dataset_argument(ap)  # own data: --dataset NAME=JSON:DIR, then DATASETS.TEST ('NAME',) in opts
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides")
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose among {list(VARIANTS)}")

    import instancefcn_d2  # noqa: F401  (before detectron2)
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from instancefcn_d2.config import get_project_cfg
    from instancefcn_d2.data import register_project_datasets
    from instancefcn_d2.engine.trainer import Trainer
    from instancefcn_d2.evaluation import SegmentProposalEvaluator
    from instancefcn_d2.fileio import atomic_write

    register_dataset_args(args.dataset, reserved=project_dataset_names())
    cfg = get_project_cfg(os.path.join(REPO, args.config_file), [*args.opts, "MODEL.WEIGHTS", args.weights])
    dataset = cfg.DATASETS.TEST[0]
    if dataset in project_dataset_names():
        register_project_datasets(names=[dataset])
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(args.weights)
    selected, select_s = select_all(model, Trainer.build_test_loader(cfg, dataset))
    evaluator = SegmentProposalEvaluator(dataset, distributed=False, mask_threshold=cfg.MODEL.INSTANCEFCN.MASK_THRESHOLD)
    windows = sum(len(w) for _, sel in selected for w in sel) / max(1, len(selected))
    record = {
        "command": "python tools/ranking_experiment.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": args.config_file,
        "dataset": dataset,
        "images": len(selected),
        "windows_per_image": round(windows, 1),
        "what": "class-agnostic AR (percent) of one checkpoint rendered with each suppression / ranking "
                "variant; s / image = the shared window selection + the variant's rendering",
        "machine": machine,
        "select_s_per_image": round(select_s, 4),
        "variants": [],
    }
    for name in names:
        kwargs = VARIANTS[name]
        results, render_s, nms_s = score_variant(model, selected, evaluator, kwargs)
        record["variants"].append({
            "name": name, "keys": variant_keys(kwargs),
            "mask": {k: results["segm_proposals"][k] for k in AR_KEYS},
            "box": {k: results["box_proposals"][k] for k in AR_KEYS},
            "s_per_image": round(select_s + render_s, 4), "render_s_per_image": round(render_s, 4),
            "nms_s_per_image": round(nms_s, 4),
        })
        print(name, json.dumps(record["variants"][-1]), flush=True)
        atomic_write(os.path.join(REPO, args.results), lambda f: json.dump(record, f, indent=2), "w")
    print(f"Wrote {args.results}")
    return record


if __name__ == "__main__":
    main()
