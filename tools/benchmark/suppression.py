"""Cost of ranking and suppression (NMS_TYPE x SCORE) against the main model's inference.

  PYTHONPATH=$PWD flock /tmp/heavy.lock python -m tools.benchmark.suppression \\
      [--weights output/rank_qs/model_final.pth] [--results results/suppression_cost.json]

The quick-start model (the README's main command; trained weights when given, else random
init: the cost does not depend on them) selects the windows of one generated image; the top
1000 / 5000 by objectness (the first on the quick-start image size, the second on an image twice
as large, since the quick start holds fewer than 5000 windows) are ranked and suppressed by each
variant. A row: the median seconds of the ``instancefcn.nms`` block of ``proposals_from_windows``
(scoring, sorting, mask IoU, suppression; torch.profiler), of the inference at that many windows
(the model's window selection, ``TOPK_PER_SCALE`` = the count on every level, plus the
variant's rendering of the top windows: suppression, ranking and pasting), and their ratio. Kept apart from ``python -m tools.benchmark`` so that the two
can change independently; ``tools/render_results.py`` renders the file into RESULTS.md.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from tools.benchmark import QUICKSTART_CONFIGS, REPO

VARIANTS = {
    "box 0.8 (paper)": {"NMS_TYPE": "box", "NMS_THRESH": 0.8, "SCORE": "objectness"},
    "box 0.8 + maskness": {"NMS_TYPE": "box", "NMS_THRESH": 0.8, "SCORE": "objectness_maskness"},
    "box 0.8, matrix linear + maskness (FPN default)": {"NMS_TYPE": "box_matrix", "NMS_THRESH": 0.8,
                                                        "MATRIX_NMS_KERNEL": "linear", "SCORE": "objectness_maskness"},
    "mask 0.5 + maskness": {"NMS_TYPE": "mask", "NMS_THRESH": 0.5, "SCORE": "objectness_maskness"},
    "matrix gaussian + maskness": {"NMS_TYPE": "matrix", "MATRIX_NMS_KERNEL": "gaussian",
                                   "SCORE": "objectness_maskness"},
    "matrix linear + maskness": {"NMS_TYPE": "matrix", "MATRIX_NMS_KERNEL": "linear",
                                 "SCORE": "objectness_maskness"},
}
# windows -> the image's shorter / longer side (the quick start's test size, then twice it)
SIZES = {1000: (192, 288), 5000: (384, 576)}


def _model(cfg_opts, weights):
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from instancefcn_d2.config import get_project_cfg

    cfg = get_project_cfg(os.path.join(REPO, QUICKSTART_CONFIGS["quickstart_fpn"]), [*cfg_opts, "MODEL.WEIGHTS", ""])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if weights:
        DetectionCheckpointer(model).load(weights)
    return model


def _median_s(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _nms_seconds(windows, kwargs, repeats):
    from torch.profiler import ProfilerActivity, profile

    from instancefcn_d2.inference import proposals_from_windows

    out = []
    for _ in range(repeats + 1):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            proposals_from_windows(windows, **kwargs)
        out.append(sum(e.cpu_time_total for e in prof.key_averages() if e.key == "instancefcn.nms") / 1e6)
    return statistics.median(out[1:])


def measure(num_windows, weights, repeats):
    """Rows for one window count: ``[{variant, windows, nms_s, inference_s, percent}]``."""
    import cv2
    import torch

    from instancefcn_d2.data import generate_split
    from instancefcn_d2.inference import proposals_from_windows

    short, long_ = SIZES[num_windows]
    base = ["MODEL.INSTANCEFCN.TEST_SCALES", f"[{short}]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", str(long_),
            "MODEL.INSTANCEFCN.TOPK_PER_SCALE", str(num_windows), "TEST.DETECTIONS_PER_IMAGE", "1000"]
    with tempfile.TemporaryDirectory() as tmp:  # a generated image with objects, as the quick start's
        generate_split(tmp, "img", 1, seed=3, min_size=short, max_size=short)
        name = sorted(f for f in os.listdir(os.path.join(tmp, "img")) if f.endswith(".png"))[0]
        bgr = cv2.imread(os.path.join(tmp, "img", name))
        bgr = cv2.resize(bgr, (long_, short))
        image = torch.as_tensor(bgr).permute(2, 0, 1).contiguous()
    inputs = [{"image": image, "height": short, "width": long_}]
    model = _model(base, weights)
    rows = []
    with torch.no_grad():
        select_s = _median_s(lambda: model.select_windows(inputs), repeats)
        sel = model.select_windows(inputs)[0]
        sel = sel[sel.objectness_logits.topk(min(num_windows, len(sel))).indices]
        for name, keys in VARIANTS.items():
            kwargs = {"mask_threshold": model.mask_threshold, "max_proposals": model.detections_per_image,
                      "nms_thresh": 0.8, "nms_type": "box", "score": "objectness", "matrix_nms_kernel": "gaussian"}
            kwargs.update({k.lower(): v for k, v in keys.items()})
            nms_s = _nms_seconds(sel, kwargs, repeats)
            render_s = _median_s(lambda: proposals_from_windows(sel, **kwargs), repeats)
            kept = len(proposals_from_windows(sel, **kwargs))
            total = select_s + render_s
            rows.append({"name": f"{name} @ {len(sel)} windows",
                         "image": f"{short}x{long_}", "windows": len(sel), "kept": kept,
                         "suppression_s": round(nms_s, 4), "inference_s": round(total, 4),
                         "suppression_percent_of_inference": round(100 * nms_s / total, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    from machine import describe_machine

    machine = describe_machine("cpu", gemm_sizes=())
    ap = argparse.ArgumentParser(prog="python -m tools.benchmark.suppression", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="", help="trained quick-start weights (default: random init)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--windows", default="1000,5000", help="comma list among " + ",".join(map(str, SIZES)))
    ap.add_argument("--results", default="results/suppression_cost.json")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.windows.split(",") if x.strip()]
    bad = [c for c in counts if c not in SIZES]
    if bad:
        raise SystemExit(f"--windows: {bad} not among {sorted(SIZES)}")

    import instancefcn_d2  # noqa: F401  (before detectron2)
    from instancefcn_d2.fileio import atomic_write

    record = {"command": "python -m tools.benchmark.suppression " + " ".join(argv if argv is not None else sys.argv[1:]),
              "what": "seconds of ranking + suppression (the instancefcn.nms block) vs the whole inference of the "
                      "quick-start model, one image, median of --repeats",
              "machine": machine, "rows": []}
    for c in counts:
        record["rows"] += measure(c, args.weights, args.repeats)
    atomic_write(os.path.join(REPO, args.results), lambda f: json.dump(record, f, indent=2), "w")
    print(f"Wrote {args.results}")
    return record


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
