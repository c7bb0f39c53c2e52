"""One measurement in a fresh process: ``python -m tools.benchmark.workers SPEC_JSON OUT_JSON``.

A fresh process per measurement makes its peak memory (CPU: ``ru_maxrss``; CUDA:
``torch.cuda.max_memory_allocated``) its own. Kinds: ``infer_ifcn``, ``infer_mask_rcnn``
(workers_mask_rcnn.py), ``train``, ``nms``; what they share (config, weights, images, peak
memory) is in measures.py. The model is used through its public interface only:
``model(inputs)``, ``select_windows``, ``pyramid_sizes``, ``strides``, ``backbone`` and the two
branches; stage times come from its profiler labels (stages.py).
"""
import contextlib
import json
import logging
import math
import sys
import warnings

from tools.benchmark import MODELS, QUICKSTART_CONFIGS
from tools.benchmark.measures import build_cfg, gpu_peak, load_weights, median, peak_rss_gib, rand_image
from tools.benchmark.stages import autocast, profiled_call, timed_call
from tools.benchmark.workers_mask_rcnn import infer_mask_rcnn

__all__ = ["build_cfg", "infer_ifcn", "train", "run", "WORKERS"]


def flop_count(model, sizes, device):
    """fvcore multiply-adds of backbone + both branches on every level, summed over the test
    scales ``sizes`` (padded as the model pads)."""
    import torch
    from fvcore.nn import FlopCountAnalysis
    from torch import nn

    class BackboneAndBranches(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            feats = self.m.backbone(x)
            levels = [feats[f] for f in self.m.in_features]
            return [self.m.instance_branch(t) for t in levels] + [self.m.objectness_branch(t) for t in levels]

    net, div = BackboneAndBranches(model).eval(), model.size_divisibility
    total = backbone = 0.0
    for h, w in sizes:
        x = torch.zeros(1, 3, math.ceil(h / div) * div, math.ceil(w / div) * div, device=device)
        fca = FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            total += float(fca.total())
            backbone += float(fca.by_module().get("m.backbone", 0.0))
    return {"macs_total": total, "macs_backbone": backbone, "macs_heads": total - backbone}


def infer_ifcn(spec):
    """Inference of one InstanceFCN model on one noise image: total time (median of plain
    runs), stage times (median of profiled runs, interleaved with the plain ones), peak memory,
    windows selected per level, proposals out."""
    import torch
    from detectron2.modeling import build_model

    device, amp, dets = spec["device"], spec.get("amp"), spec["detections"]
    opts = ["TEST.DETECTIONS_PER_IMAGE", dets]
    if spec.get("nms_thresh") is not None:  # else the config's own; 1.0 skips NMS (an "_nms_off" row)
        opts += ["MODEL.INSTANCEFCN.NMS_THRESH", spec["nms_thresh"]]
    if spec.get("test_scales"):
        opts += ["MODEL.INSTANCEFCN.TEST_SCALES", list(spec["test_scales"]),
                 "MODEL.INSTANCEFCN.TEST_MAX_SIZE", spec["test_max_size"]]
    if spec.get("mask_format"):
        opts += ["MODEL.INSTANCEFCN.MASK_FORMAT", spec["mask_format"]]
    cfg = build_cfg(MODELS[spec["model"]], device, opts)
    cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE = max(cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE, dets)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights = load_weights(model, cfg, spec.get("weights", "auto"))
    h, w = spec["size"]
    inp = {"image": rand_image(h, w, spec.get("seed", 0)), "height": h, "width": w}
    sizes = model.pyramid_sizes(h, w)
    rss_after_build = peak_rss_gib()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run():
        with torch.no_grad(), autocast(device, amp):
            return model([inp])[0]["instances"]

    for _ in range(spec["warmup"]):  # whole-model runs, as every row's warm-up (Mask R-CNN's too)
        run()
    # The windows each level hands to rendering, through the public selection step, untimed.
    with torch.no_grad(), autocast(device, amp):
        levels = model.select_windows([inp])[0].levels
    per_level = torch.bincount(levels.cpu(), minlength=len(model.strides)).tolist()
    totals, profiled, stages, out = [], [], {}, None
    for _ in range(spec["repeats"]):
        out = None  # free the previous output first: peak memory is that of one run
        out, t = timed_call(run, device)
        totals.append(t)
        if spec.get("profile", True):
            out = None
            out, t, st = profiled_call(run, device)
            profiled.append(t)
            for k, v in st.items():
                stages.setdefault(k, []).append(v)
    masks = out.pred_masks if out.has("pred_masks") else None
    res = {
        "model": spec["model"], "config": MODELS[spec["model"]], "size": [h, w],
        "detections_per_image": dets, "mask_format": spec.get("mask_format") or "bitmask (default)",
        "topk_per_scale": cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE, "nms_thresh": cfg.MODEL.INSTANCEFCN.NMS_THRESH,
        "warmup_runs": spec["warmup"],
        "test_scales": list(cfg.MODEL.INSTANCEFCN.TEST_SCALES), "test_max_size": cfg.MODEL.INSTANCEFCN.TEST_MAX_SIZE,
        "in_features": list(model.in_features), "strides": list(model.strides),
        "scaled_sizes": [list(s) for s in sizes],
        "positions_total": sum(math.ceil(a / s) * math.ceil(b / s) for a, b in sizes for s in model.strides),
        "selected_windows_per_level": per_level, "window_cells": model.window_size ** 2,
        "proposals_out": len(out), "total_s": median(totals), "total_s_runs": totals,
        "weights": weights, "amp": amp or "none", "rss_after_build_gb": rss_after_build,
        "peak_rss_gb": peak_rss_gib(), "torch_num_threads": torch.get_num_threads(), **gpu_peak(device),
    }
    if isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.dim() == 3:
        res["mean_mask_fill"] = float(masks.count_nonzero()) / max(1, masks.numel())
    if profiled:
        res["profiled_total_s"] = median(profiled)
        res["stages_s"] = {k: median(v) for k, v in stages.items()}
        # From the profiled runs alone, so that numerator and denominator are the same runs.
        res["post_backbone_fraction"] = 1 - res["stages_s"]["backbone"] / res["profiled_total_s"]
        res["backbone_heads_s"] = res["stages_s"]["backbone"] + res["stages_s"]["heads"]
    if spec.get("flops"):
        res["flops"] = flop_count(model, sizes, device)
    return res


def nms(spec):
    """The NMS of one image's rendering, both ways (one greedy pass over all windows; per
    test scale's level, then across), on the windows a model selects at NMS_THRESH 0.8 with
    ``detections`` proposals kept: median seconds of each and the proposals each keeps."""
    import torch
    from detectron2.modeling import build_model

    from instancefcn_d2.inference import proposals_from_windows

    opts = ["TEST.DETECTIONS_PER_IMAGE", spec["detections"]]
    if spec.get("test_scales"):
        opts += ["MODEL.INSTANCEFCN.TEST_SCALES", list(spec["test_scales"]),
                 "MODEL.INSTANCEFCN.TEST_MAX_SIZE", spec["test_max_size"]]
    cfg = build_cfg(MODELS[spec["model"]], spec["device"], opts)
    cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE = max(cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE, spec["detections"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights = load_weights(model, cfg, spec.get("weights", "auto"))
    h, w = spec["size"]
    with torch.no_grad():
        sel = model.select_windows([{"image": rand_image(h, w, spec.get("seed", 0)), "height": h, "width": w}])[0]
    res = {"model": spec["model"], "size": [h, w], "weights": weights, "windows": len(sel),
           "nms_thresh": cfg.MODEL.INSTANCEFCN.NMS_THRESH, "detections_per_image": spec["detections"]}
    for key, per_level in (("one_pass", False), ("per_level_first", True)):
        def render():  # "roi": no pasting, so the NMS dominates what is timed
            return proposals_from_windows(sel, nms_thresh=cfg.MODEL.INSTANCEFCN.NMS_THRESH, mask_format="roi",
                                          max_proposals=spec["detections"], nms_per_level_first=per_level)
        for _ in range(spec["warmup"]):
            render()
        times = []
        for _ in range(spec["repeats"]):
            out, t = timed_call(render, spec["device"])
            times.append(t)
        res[f"{key}_s"], res[f"{key}_proposals"] = median(times), len(out)
    res["speedup"] = res["one_pass_s"] / res["per_level_first_s"]
    return res


def _train_input(h, w, seed=0):
    """Noise image with three square objects: one of 96 px (the pyramid model's canonical
    size, so that positive windows exist), one smaller, one larger."""
    import torch
    from detectron2.structures import Boxes, Instances, PolygonMasks

    s = min(h, w)
    boxes = []
    for i, sz in enumerate([96, max(16, s // 4), int(s * 0.8)]):
        sz = min(sz, s - 2)
        x0, y0 = max(0.0, w * (i + 1) / 4 - sz / 2), max(0.0, h / 2 - sz / 2)
        boxes.append((x0, y0, min(float(w), x0 + sz), min(float(h), y0 + sz)))
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
    return {"image": rand_image(h, w, seed), "instances": inst, "height": h, "width": w}


def train(spec):
    """Seconds per training iteration (forward, backward, SGD step; fp32, batch 1)."""
    import torch
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    device = spec["device"]
    config = QUICKSTART_CONFIGS.get(spec["config"]) or MODELS[spec["config"]]
    cfg = build_cfg(config, device)
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = load_weights(model, cfg, spec.get("weights", "auto"))
    model.train()
    optimizer = build_optimizer(cfg, model)
    h, w = spec["size"]
    batch = [_train_input(h, w, seed=0)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(spec["warmup"]):
        step()
    runs = [timed_call(step, device) for _ in range(spec["iters"])]
    return {
        "config": config, "size": [h, w], "batch": 1, "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        "iter_s": median([t for _, t in runs]), "iter_s_runs": [t for _, t in runs],
        "final_loss": float(runs[-1][0].detach()), "weights": weights, "peak_rss_gb": peak_rss_gib(),
        **gpu_peak(device),
    }


# kind -> worker; a new kind of row adds its function here (its own module when it is long).
WORKERS = {"infer_ifcn": infer_ifcn, "infer_mask_rcnn": infer_mask_rcnn, "train": train, "nms": nms}


def run(spec):
    """One measurement in this process: its result dict."""
    import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims before any detectron2 import)

    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    return WORKERS[spec["kind"]](spec)


@contextlib.contextmanager
def quiet():
    """Model-building logs and warnings off while a row runs: its output is its result."""
    loggers = [logging.getLogger(name) for name in ("detectron2", "fvcore")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def main(argv=None):
    spec_json, out_path = argv or sys.argv[1:]
    with quiet():
        res = run(json.loads(spec_json))
    with open(out_path, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
