#!/usr/bin/env python
"""Cost benchmark of InstanceFCN (VGG-16, stride 8): inference time with a per-stage
breakdown, peak memory, training time per iteration, FLOPs vs a measured GEMM peak, and a
comparison with detectron2's Mask R-CNN R50-FPN, all on the same machine in one run.

  python tools/benchmark.py                       # full run; writes ./BENCHMARKS.md and
                                                  # ./results/benchmark.json
  python tools/benchmark.py --quick --out-dir /tmp/bench        # < 1 min smoke run on a CPU
  python tools/benchmark.py --device cuda --amp bf16           # GPU, autocast inference rows

What is measured (details and caveats are repeated in the generated BENCHMARKS.md):

* Inference (``model.eval()``, ``torch.no_grad()``) of the model built from
  ``configs/Base-InstanceFCN-VGG16.yaml`` at its default test pyramid (shorter sides
  119..900, longer side <= 1500) on synthetic uint8 images, median of ``--repeats`` runs after
  ``--warmup`` runs. The backbone carries the ImageNet VGG-16 weights when
  ``weights/vgg16_caffe_imagenet.pth`` exists (the heads keep their random N(0, 0.01) init);
  weights do not change the amount of computation, only what the masks look like and
  therefore how much there is to paste. ``MODEL.INSTANCEFCN.NMS_THRESH`` is set to 1.0 so that
  NMS removes nothing and the requested number of proposals (``DETECTIONS_PER_IMAGE``) really
  reaches the pasting step; ``TOPK_PER_SCALE`` is raised to at least that number.
* Stage breakdown with timers that synchronise on CUDA, installed from the outside (forward
  hooks on ``model.backbone``, ``model.instance_branch``, ``model.objectness_branch``;
  wrappers around ``instancefcn_d2.meta_arch.assemble`` and the post-processing functions that
  ``instancefcn_d2.inference`` calls): the library code is not modified.
* Every measurement runs in a fresh subprocess, so peak memory (CPU: ``ru_maxrss``; CUDA:
  ``torch.cuda.max_memory_allocated``) belongs to that measurement alone.
* Mask R-CNN R50-FPN (detectron2 model zoo config, random weights with its FrozenBatchNorm
  statistics calibrated on the image so that its RPN and ROI heads see a normal workload) on
  the same images at its own test size (shorter side 800, longer <= 1333).

On a CPU shared with other jobs, multi-threaded small ops can stall for milliseconds each
(OpenMP workers waiting for a core), which inflates everything but the big convolutions;
``--threads 1`` gives steadier numbers there. Rerun on a quiet machine for published figures.
"""
import argparse
import contextlib
import functools
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))
from machine import describe_machine, gemm_peak  # noqa: E402

BASE_CONFIG = os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml")
QUICKSTART_CONFIG = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml")
MASK_RCNN_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"

# Stages of the breakdown, in pipeline order. "other" = total - sum of the rest (pyramid
# resizing, normalisation and padding, top-K, window boxes, sigmoid, empty-mask filtering...).
STAGES = ("backbone", "heads", "assembling", "tight_boxes_nms", "paste_binarize", "mask_boxes", "other")
STAGE_TITLES = {
    "backbone": "backbone",
    "heads": "heads",
    "assembling": "assembling",
    "tight_boxes_nms": "tight boxes + NMS",
    "paste_binarize": "paste + binarise",
    "mask_boxes": "boxes of pasted masks",
    "other": "other",
}
# Functions of instancefcn_d2.inference wrapped for each stage (whichever exist).
INFERENCE_FUNCS = {
    "tight_boxes_nms": ("_cells_in_image", "mask_tight_boxes", "batched_nms"),
    "paste_binarize": ("paste_masks_in_image", "paste_masks_binary"),
    "mask_boxes": ("_masks_to_boxes",),
}

TARGET_POST_BACKBONE = 0.15
TARGET_PEAK_GB = 4.0


# ============================================================================ helpers
def _median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def _gib(nbytes):
    return nbytes / 1024 ** 3


def _peak_rss_gib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024 ** 3


def _sync_fn(device):
    import torch

    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _autocast(device, amp):
    import torch

    if amp in (None, "none"):
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return torch.autocast(device_type=device, dtype=dtype)


def _quiet():
    logging.getLogger("detectron2").setLevel(logging.ERROR)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")


def _rand_image(h, w, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def machine_info(device, threads=None):
    # One description for every published figure (tools/machine.py): CPU, threads, load
    # average at start with "idle", versions, git commit. The GEMM peak is measured below.
    return describe_machine(device, threads, gemm_sizes=())


class StageTimers:
    """Accumulates wall time per stage for one inference call; synchronises on CUDA."""

    def __init__(self, device):
        self.sync = _sync_fn(device)
        self.acc = defaultdict(float)
        self.calls = defaultdict(list)  # "assembling" -> windows per call
        self._starts = {}
        self.enabled = True  # False: the hooks neither synchronise nor time

    def reset(self):
        self.acc.clear()
        self.calls.clear()

    def wrap(self, stage, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not self.enabled:
                return fn(*args, **kwargs)
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.acc[stage] += time.perf_counter() - t0

        return timed

    def hook_module(self, stage, module):
        key = id(module)

        def pre(_mod, _inp):
            if not self.enabled:
                return
            self.sync()
            self._starts[key] = time.perf_counter()

        def post(_mod, _inp, _out):
            if not self.enabled:
                return
            self.sync()
            self.acc[stage] += time.perf_counter() - self._starts.pop(key)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def instrument(model, timers):
    """Install the stage timers on ``model`` and on the module-level functions it calls."""
    import instancefcn_d2.inference as inference_mod
    import instancefcn_d2.meta_arch as meta_arch_mod

    timers.hook_module("backbone", model.backbone)
    timers.hook_module("heads", model.instance_branch)
    timers.hook_module("heads", model.objectness_branch)

    assemble = meta_arch_mod.assemble
    timed_assemble = timers.wrap("assembling", assemble)

    def recording_assemble(score_maps, batch_idx, ys, xs, window_size):
        timers.calls["assembling"].append(int(ys.numel()))
        return timed_assemble(score_maps, batch_idx, ys, xs, window_size)

    meta_arch_mod.assemble = recording_assemble
    wrapped = []
    for stage, names in INFERENCE_FUNCS.items():
        for name in names:
            fn = getattr(inference_mod, name, None)
            if callable(fn):
                setattr(inference_mod, name, timers.wrap(stage, fn))
                wrapped.append(f"instancefcn_d2.inference.{name}")
    return ["model.backbone", "model.instance_branch", "model.objectness_branch",
            "instancefcn_d2.meta_arch.assemble"] + wrapped


# ============================================================================ workers
def _ifcn_cfg(config_file, device, overrides=None):
    import instancefcn_d2  # noqa: F401
    from detectron2.config import get_cfg
    from instancefcn_d2 import add_instancefcn_config
    from instancefcn_d2.engine import merge_config

    cfg = get_cfg()
    add_instancefcn_config(cfg)
    opts = [x for kv in (overrides or {}).items() for x in kv] + ["MODEL.DEVICE", device]
    return merge_config(cfg, config_file, opts)


def _load_backbone_weights(model, weights):
    if not weights:
        return "random init (detectron2/VGG16 defaults), heads N(0, 0.01)"
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).load(weights)
    return f"backbone from {os.path.relpath(weights, REPO)}; heads random N(0, 0.01)"


def _level_flops(model, level_sizes, device):
    """fvcore FLOP count (multiply-adds) of backbone + heads, summed over the pyramid levels."""
    import torch
    from fvcore.nn import FlopCountAnalysis
    from torch import nn

    class BackboneAndHeads(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m._heads(x)

    net = BackboneAndHeads(model).eval()
    div = model.size_divisibility
    total, backbone = 0.0, 0.0
    per_level = []
    for h, w in level_sizes:
        hp, wp = (math.ceil(h / div) * div, math.ceil(w / div) * div) if div > 1 else (h, w)
        x = torch.zeros(1, 3, hp, wp, device=device)
        fca = FlopCountAnalysis(net, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():
            t = float(fca.total())
            b = float(fca.by_module().get("m.backbone", 0.0))
        total += t
        backbone += b
        per_level.append({"padded_size": [hp, wp], "gmacs": t / 1e9})
    return {"macs_total": total, "macs_backbone": backbone, "macs_heads": total - backbone,
            "per_level": per_level}


def worker_infer_ifcn(spec):
    import torch

    import instancefcn_d2  # noqa: F401
    from detectron2.modeling import build_model

    device, amp = spec["device"], spec.get("amp")
    sync = _sync_fn(device)
    dets = spec["detections"]
    overrides = {
        "MODEL.INSTANCEFCN.NMS_THRESH": spec.get("nms_thresh", 1.0),
        "TEST.DETECTIONS_PER_IMAGE": dets,
        "MODEL.WEIGHTS": "",
    }
    if spec.get("test_scales"):
        overrides["MODEL.INSTANCEFCN.TEST_SCALES"] = list(spec["test_scales"])
    if spec.get("test_max_size"):
        overrides["MODEL.INSTANCEFCN.TEST_MAX_SIZE"] = spec["test_max_size"]
    cfg = _ifcn_cfg(BASE_CONFIG, device, overrides)
    cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE = max(cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE, dets)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights_note = _load_backbone_weights(model, spec.get("weights"))
    timers = StageTimers(device)
    instrumented = instrument(model, timers)

    h, w = spec["size"]
    image = _rand_image(h, w, seed=spec.get("seed", 0))
    inp = {"image": image, "height": h, "width": w}
    levels = model.pyramid_sizes(h, w)
    positions = [math.ceil(lh / s) * math.ceil(lw / s) for lh, lw in levels for s in model.strides]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_after_build = _peak_rss_gib()

    def run_once():
        timers.reset()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad(), _autocast(device, amp):
            out = model([inp])[0]["instances"]
        sync()
        return time.perf_counter() - t0, out

    for _ in range(spec["warmup"]):
        run_once()
    totals, stages, n_props, assembled = [], defaultdict(list), [], []
    for _ in range(spec["repeats"]):
        dt, out = run_once()
        totals.append(dt)
        for s in STAGES[:-1]:
            stages[s].append(timers.acc.get(s, 0.0))
        stages["other"].append(dt - sum(timers.acc.values()))
        n_props.append(len(out))
        assembled.append(list(timers.calls["assembling"]))
    # Share of image pixels set in the pasted masks (count_nonzero: no (N, H, W) float copy).
    mask_fill = float(out.pred_masks.count_nonzero()) / max(1, out.pred_masks.numel())
    plain = []
    if device == "cuda":  # totals without the per-stage synchronisation
        timers.enabled = False
        plain = [run_once()[0] for _ in range(spec["repeats"])]
    res = {
        "size": [h, w],
        "detections_per_image": dets,
        "topk_per_scale": cfg.MODEL.INSTANCEFCN.TOPK_PER_SCALE,
        "nms_thresh": cfg.MODEL.INSTANCEFCN.NMS_THRESH,
        "mask_threshold": cfg.MODEL.INSTANCEFCN.MASK_THRESHOLD,
        "test_scales": list(cfg.MODEL.INSTANCEFCN.TEST_SCALES),
        "test_max_size": cfg.MODEL.INSTANCEFCN.TEST_MAX_SIZE,
        "pyramid_levels": [list(x) for x in levels],
        "positions_per_level": positions,
        "positions_total": sum(positions),
        "assembled_windows_per_level": assembled[-1],
        "assembled_windows_total": sum(assembled[-1]),
        "window_cells": model.window_size ** 2,
        "proposals_out": n_props[-1],
        "mean_mask_fill": mask_fill,
        "total_s": _median(totals),
        "total_s_runs": totals,
        "stages_s": {s: _median(v) for s, v in stages.items()},
        "weights": weights_note,
        "amp": amp or "none",
        "instrumented": instrumented,
        "stages_instrumented": sorted({"backbone", "heads", "assembling", "other"} | {
            stage for stage, names in INFERENCE_FUNCS.items()
            if any(f"instancefcn_d2.inference.{n}" in instrumented for n in names)}),
        "rss_after_build_gb": rss_after_build,
        "peak_rss_gb": _peak_rss_gib(),
        "torch_num_threads": torch.get_num_threads(),
    }
    if plain:
        res["total_s_unsynchronised"] = _median(plain)
    if device == "cuda":
        res["peak_cuda_gb"] = _gib(torch.cuda.max_memory_allocated())
    st = res["stages_s"]
    res["post_backbone_fraction"] = (res["total_s"] - st["backbone"]) / res["total_s"]
    res["backbone_heads_s"] = st["backbone"] + st["heads"]
    if spec.get("flops"):
        res["flops"] = _level_flops(model, levels, device)
    return res


def _calibrate_frozen_bn(model, inputs):
    """Data-dependent init of a randomly initialised ResNet: set every FrozenBatchNorm2d's
    statistics to those of its own input on ``inputs`` (one forward, layer by layer), so that
    activations stay O(1) through the 50 layers as in a trained network. Without it they reach
    ~1e4, the RPN's box deltas explode and only a couple of proposals survive, so the ROI
    heads would run on ~2 boxes instead of 1000 and the timing would miss most of their cost."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    def pre(mod, inp):
        x = inp[0].float()
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hd in handles:
            hd.remove()


def worker_infer_mask_rcnn(spec):
    import torch
    import torch.nn.functional as F

    import instancefcn_d2  # noqa: F401
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    device, amp = spec["device"], spec.get("amp")
    sync = _sync_fn(device)
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(MASK_RCNN_CONFIG))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if spec.get("min_size_test"):
        cfg.INPUT.MIN_SIZE_TEST = spec["min_size_test"]
        cfg.INPUT.MAX_SIZE_TEST = spec["max_size_test"]
    if spec.get("score_thresh") is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = spec["score_thresh"]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = spec["size"]
    image = _rand_image(h, w, seed=spec.get("seed", 0))
    # As DefaultPredictor: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST), outputs in the
    # original frame. The resize is timed, as InstanceFCN's pyramid resizing is.
    short, cap = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    scale = short / min(h, w)
    if max(h, w) * scale > cap:
        scale = cap / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if spec.get("calibrate_bn", True):
        x = F.interpolate(image.to(device, torch.float32)[None], size=(nh, nw), mode="bilinear",
                          align_corners=False)[0]
        _calibrate_frozen_bn(model, [{"image": x, "height": h, "width": w}])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run_once():
        sync()
        t0 = time.perf_counter()
        with torch.no_grad(), _autocast(device, amp):
            x = image.to(device, torch.float32)[None]
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)[0]
            out = model([{"image": x, "height": h, "width": w}])[0]["instances"]
        sync()
        return time.perf_counter() - t0, len(out)

    n_proposals = []  # RPN proposals reaching the ROI heads, recorded by a hook
    model.proposal_generator.register_forward_hook(lambda _m, _i, out: n_proposals.append(len(out[0][0])))
    for _ in range(spec["warmup"]):
        run_once()
    runs = [run_once() for _ in range(spec["repeats"])]
    res = {
        "size": [h, w],
        "resized_to": [nh, nw],
        "score_thresh_test": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "detections_out": runs[-1][1],
        "frozen_bn_calibrated": bool(spec.get("calibrate_bn", True)),
        "rpn_proposals_out": n_proposals[-1] if n_proposals else None,
        "total_s": _median([r[0] for r in runs]),
        "total_s_runs": [r[0] for r in runs],
        "peak_rss_gb": _peak_rss_gib(),
        "amp": amp or "none",
    }
    if device == "cuda":
        res["peak_cuda_gb"] = _gib(torch.cuda.max_memory_allocated())
    return res


def _train_input(h, w, seed=0):
    import torch
    from detectron2.structures import Boxes, Instances, PolygonMasks

    # Three rectangles: one of the window's canonical size (96 px at the 168-px window), so
    # that positive windows exist, one smaller and one larger (clipped to the image).
    s = min(h, w)
    sizes = [96, max(16, s // 4), min(s - 2, int(s * 0.8))]
    boxes = []
    for i, sz in enumerate(sizes):
        sz = min(sz, s - 2)
        cx, cy = w * (i + 1) / 4, h / 2
        x0, y0 = max(0.0, cx - sz / 2), max(0.0, cy - sz / 2)
        boxes.append((x0, y0, min(float(w), x0 + sz), min(float(h), y0 + sz)))
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
    return {"image": _rand_image(h, w, seed), "instances": inst, "height": h, "width": w}


def worker_train(spec):
    import torch

    import instancefcn_d2  # noqa: F401
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer

    device = spec["device"]
    sync = _sync_fn(device)
    config = QUICKSTART_CONFIG if spec["config"] == "quickstart" else BASE_CONFIG
    cfg = _ifcn_cfg(config, device, {"MODEL.WEIGHTS": ""})
    torch.manual_seed(0)
    model = build_model(cfg)
    weights_note = _load_backbone_weights(model, spec.get("weights"))
    model.train()
    optimizer = build_optimizer(cfg, model)
    h, w = spec["size"]
    batch = [_train_input(h, w, seed=i) for i in range(spec.get("batch", 1))]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        sync()
        t0 = time.perf_counter()
        losses = model(batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    res = {
        "config": os.path.relpath(config, REPO),
        "size": [h, w],
        "batch": len(batch),
        "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        "iter_s": _median(times),
        "iter_s_runs": times,
        "final_loss": float(loss.detach()),
        "weights": weights_note,
        "peak_rss_gb": _peak_rss_gib(),
    }
    if device == "cuda":
        res["peak_cuda_gb"] = _gib(torch.cuda.max_memory_allocated())
    return res


WORKERS = {"infer_ifcn": worker_infer_ifcn, "infer_mask_rcnn": worker_infer_mask_rcnn, "train": worker_train}


def run_worker(spec_json, out_path):
    _quiet()
    spec = json.loads(spec_json)
    if spec.get("threads"):
        import torch

        torch.set_num_threads(spec["threads"])
    res = WORKERS[spec["kind"]](spec)
    with open(out_path, "w") as f:
        json.dump(res, f)


def run_job(spec, log):
    """Run one measurement in a fresh interpreter; returns its result dict or {"error": ...}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec), "--worker-out", out]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            log(f"  FAILED ({proc.returncode}) after {wall:.1f}s:\n{tail}")
            return {"error": f"exit {proc.returncode}: {tail[-2000:]}", "spec": spec}
        with open(out) as f:
            res = json.load(f)
    res["job_wall_s"] = wall
    return res


# ============================================================================ orchestration
def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="default: cuda when available, else cpu")
    ap.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                    help="torch.autocast dtype for the inference rows (and the GEMM peak)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 5; --quick: 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before each row (default 1)")
    ap.add_argument("--train-iters", type=int, default=None, help="timed training iterations (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="one small image (128x160), small pyramid, repeats 2: a smoke run (< 1 min)")
    ap.add_argument("--out-dir", default=REPO,
                    help="writes <out-dir>/BENCHMARKS.md and <out-dir>/results/benchmark.json "
                         "(default: the repository root)")
    ap.add_argument("--weights", default=None,
                    help="backbone checkpoint (default: weights/vgg16_caffe_imagenet.pth when "
                         "present, else random init; 'none' forces random init)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every measurement")
    ap.add_argument("--only", default=None, metavar="NAME[,NAME...]",
                    help="run only these measurements (names as in results/benchmark.json, e.g. "
                         "ifcn_480x640_1000,mask_rcnn_800x1200); prefixes match")
    ap.add_argument("--skip-mask-rcnn", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return ap


def plan(args, device, weights):
    """The list of (name, spec) measurements of this run."""
    common = {"device": device, "amp": None if args.amp == "none" else args.amp, "weights": weights,
              "threads": args.threads, "warmup": args.warmup}
    jobs = []

    def infer(name, size, dets, flops=False, **kw):
        jobs.append((name, dict(common, kind="infer_ifcn", size=list(size), detections=dets,
                                repeats=args.repeats, flops=flops, **kw)))

    def mrcnn(name, size, **kw):
        jobs.append((name, dict(common, kind="infer_mask_rcnn", size=list(size), repeats=args.repeats, **kw)))

    def train(name, config, size):
        jobs.append((name, dict(common, kind="train", config=config, size=list(size),
                                iters=args.train_iters, amp=None)))

    if args.quick:
        small = dict(test_scales=[64, 96, 128], test_max_size=256)
        infer("ifcn_128x160_1000", (128, 160), 1000, flops=True, **small)
        infer("ifcn_128x160_100", (128, 160), 100, **small)
        if not args.skip_mask_rcnn:
            mrcnn("mask_rcnn_128x160", (128, 160), min_size_test=128, max_size_test=256)
        if not args.skip_train:
            train("train_quickstart_160x160", "quickstart", (160, 160))
        return jobs
    infer("ifcn_480x640_1000", (480, 640), 1000, flops=True)
    infer("ifcn_800x1200_1000", (800, 1200), 1000, flops=True)
    infer("ifcn_240x320_1000", (240, 320), 1000)
    infer("ifcn_480x640_100", (480, 640), 100)
    infer("ifcn_480x640_5000", (480, 640), 5000)
    if not args.skip_mask_rcnn:
        mrcnn("mask_rcnn_480x640", (480, 640))
        mrcnn("mask_rcnn_800x1200", (800, 1200))
        mrcnn("mask_rcnn_800x1200_100dets", (800, 1200), score_thresh=0.0)
    if not args.skip_train:
        train("train_quickstart_160x160", "quickstart", (160, 160))
        train("train_paper_600x800", "paper", (600, 800))
    return jobs


def _ok(r):
    return isinstance(r, dict) and "error" not in r


def _fmt_s(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _fmt(x, spec="{:.3f}"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else spec.format(x)


def summarise(results, machine, gemm, args, device, weights):
    """Headline numbers + target checks from the raw job results."""
    quick = args.quick
    ifcn = {k: v for k, v in results.items() if k.startswith("ifcn_") and _ok(v)}
    main_small = "ifcn_128x160_1000" if quick else "ifcn_480x640_1000"
    main_large = "ifcn_128x160_1000" if quick else "ifcn_800x1200_1000"
    s = {"device": device, "amp": args.amp, "quick": quick, "machine": machine, "gemm_peak": gemm}
    headline = "128x160 (quick run)" if quick else "800x1200"
    s["headline_image"] = headline
    s["headline_job"] = main_large

    def get(name, key):
        r = ifcn.get(name)
        return r.get(key) if r else None

    s["post_backbone_fraction"] = get(main_large, "post_backbone_fraction")
    s["post_backbone_fraction_image"] = headline
    if quick:
        s["post_backbone_fraction_128x160"] = get(main_small, "post_backbone_fraction")
    else:
        s["post_backbone_fraction_480x640"] = get(main_small, "post_backbone_fraction")
        s["post_backbone_fraction_800x1200"] = get(main_large, "post_backbone_fraction")
    s["peak_rss_gb_800x1200"] = get(main_large, "peak_rss_gb")
    s["peak_rss_gb_image"] = headline
    if device == "cuda":
        s["peak_cuda_gb_800x1200"] = get(main_large, "peak_cuda_gb")
    s["inference_s_480x640"] = get(main_small, "total_s")
    s["inference_s_800x1200"] = get(main_large, "total_s")

    # FLOPs and achieved FLOP/s vs GEMM (both as 2 x multiply-adds per second).
    flops_rows = {}
    for name, r in ifcn.items():
        if "flops" in r:
            f = 2 * r["flops"]["macs_total"]
            t = r["backbone_heads_s"]
            flops_rows[name] = {"gflops_forward": f / 1e9, "gflops_backbone": 2 * r["flops"]["macs_backbone"] / 1e9,
                                "backbone_heads_s": t, "achieved_gflops_per_s": f / t / 1e9,
                                "vs_gemm_peak": (f / t) / gemm["flops_per_s"]}
    s["flops"] = flops_rows
    fr = flops_rows.get(main_large) or next(iter(flops_rows.values()), None)
    s["flops_per_s_vs_gemm_peak"] = fr["vs_gemm_peak"] if fr else None
    s["gemm_peak_gflops_per_s"] = gemm["flops_per_s"] / 1e9

    # Mask R-CNN comparison.
    mr_name = "mask_rcnn_128x160" if quick else "mask_rcnn_800x1200"
    mr = results.get(mr_name)
    ours = get(main_large, "total_s")
    s["vs_mask_rcnn_r50_fpn"] = ours / mr["total_s"] if _ok(mr) and ours else None
    s["vs_mask_rcnn_r50_fpn_image"] = headline
    if not quick:
        for size, name in (("480x640", "mask_rcnn_480x640"), ("800x1200_100dets", "mask_rcnn_800x1200_100dets")):
            r = results.get(name)
            o = get(main_small if size == "480x640" else main_large, "total_s")
            s[f"vs_mask_rcnn_r50_fpn_{size}"] = o / r["total_s"] if _ok(r) and o else None

    # Targets (reported, not asserted).
    targets = []
    for name in dict.fromkeys([main_small, main_large]):
        f = get(name, "post_backbone_fraction")
        if f is not None:
            targets.append({"target": f"after-backbone share of inference <= {TARGET_POST_BACKBONE:.0%} at "
                                      f"{get(name, 'detections_per_image')} proposals ({name.split('_')[1]})",
                            "value": f, "met": f <= TARGET_POST_BACKBONE})
    worst = None
    for name, r in ifcn.items():
        ratio = max(r["assembled_windows_per_level"]) / r["topk_per_scale"]
        worst = ratio if worst is None else max(worst, ratio)
    if worst is not None:
        targets.append({"target": "no step scales with positions x m^2 of the whole image: windows assembled "
                                  "per pyramid level / TOPK_PER_SCALE, max over rows (<= 1: top-K only)",
                        "value": worst, "met": worst <= 1})
    pk = s["peak_rss_gb_800x1200"]
    if pk is not None:
        targets.append({"target": f"peak CPU memory (RSS) <= {TARGET_PEAK_GB:.0f} GB at {headline}",
                        "value": pk, "met": pk <= TARGET_PEAK_GB})
    s["targets"] = targets
    return s


def device_is_cuda(summary):
    return str(summary.get("device", "")).startswith("cuda")


def render_markdown(summary, results, args):
    m = summary["machine"]
    quick = summary["quick"]
    L = []
    L.append("# InstanceFCN benchmarks" + (" (quick smoke run)" if quick else ""))
    L.append("")
    L.append("Generated by `python tools/benchmark.py" + (" --quick" if quick else "")
             + (f" --device {summary['device']}" if summary["device"] == "cuda" else "")
             + (f" --amp {summary['amp']}" if summary["amp"] != "none" else "")
             + (f" --threads {args.threads}" if args.threads else "")
             + "`. Raw numbers: `results/benchmark.json`.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append(f"| CPU | {m['cpu_model']} ({m['logical_cores']} logical cores) |")
    L.append(f"| torch threads | {m['torch_num_threads']} |")
    L.append(f"| device | {summary['device']}" + (f" ({m['gpu_name']})" if m.get("gpu_name") else "") + " |")
    L.append(f"| autocast | {summary['amp']} (inference rows and GEMM peak only) |")
    L.append(f"| torch / detectron2 / python | {m['torch_version']} / {m['detectron2_version']} / {m['python_version']} |")
    L.append(f"| load average at start | {m['load_average_at_start']} |")
    g = summary["gemm_peak"]
    sizes = ", ".join(f"{r['n']}: {r['flops_per_s'] / 1e9:.1f}" for r in g.get("sizes", []))
    L.append(f"| GEMM peak (`torch.mm` {g['dtype']}, median per size, best size {g['n']}x{g['n']}) | "
             f"{g['flops_per_s'] / 1e9:.1f} GFLOP/s" + (f" (by size: {sizes})" if sizes else "") + " |")
    L.append("")

    L.append("## Targets (reported, not asserted)")
    L.append("")
    L.append("| target | value | met |")
    L.append("|---|---|---|")
    for t in summary["targets"]:
        L.append(f"| {t['target']} | {t['value']:.3f} | {'yes' if t['met'] else '**no**'} |")
    L.append("")
    L.append("| headline | value |")
    L.append("|---|---|")
    for key in ("post_backbone_fraction", "post_backbone_fraction_480x640", "post_backbone_fraction_800x1200",
                "post_backbone_fraction_128x160", "peak_rss_gb_800x1200", "peak_cuda_gb_800x1200",
                "vs_mask_rcnn_r50_fpn", "vs_mask_rcnn_r50_fpn_480x640", "vs_mask_rcnn_r50_fpn_800x1200_100dets",
                "flops_per_s_vs_gemm_peak"):
            if key in summary:
                L.append(f"| `{key}` | {_fmt(summary[key])} |")
    L.append(f"| image of the un-suffixed keys | {summary['headline_image']} |")
    L.append("")

    ifcn = [(k, v) for k, v in results.items() if k.startswith("ifcn_") and _ok(v)]
    if ifcn:
        r0 = ifcn[0][1]
        L.append("## Inference: per-stage breakdown (median per image)")
        L.append("")
        L.append(f"Model: `configs/Base-InstanceFCN-VGG16.yaml`, {r0['weights']}. Test pyramid "
                 f"{r0['test_scales']} (shorter side), longer side <= {r0['test_max_size']}. "
                 f"`NMS_THRESH` = {r0['nms_thresh']} so that NMS keeps everything and the requested number of "
                 "proposals reaches pasting; `TOPK_PER_SCALE` = max(config, proposals). "
                 "Synthetic uint8 noise images. "
                 f"Median of {args.repeats} runs after {args.warmup} warm-up run(s), each row in a fresh process.")
        L.append("")
        head = "| image | proposals (req / out) | total | " + " | ".join(STAGE_TITLES[s] for s in STAGES) \
            + " | after backbone | peak RSS |" + (" peak CUDA |" if summary["device"] == "cuda" else "")
        L.append(head)
        L.append("|" + "---|" * (head.count("|") - 1))
        for name, r in ifcn:
            st = r["stages_s"]
            row = (f"| {r['size'][0]}x{r['size'][1]} | {r['detections_per_image']} / {r['proposals_out']} | "
                   f"{_fmt_s(r['total_s'])} | "
                   + " | ".join(f"{_fmt_s(st[s])} ({st[s] / r['total_s']:.0%})"
                                if s in r.get("stages_instrumented", STAGES) else "-" for s in STAGES)
                   + f" | {r['post_backbone_fraction']:.1%} | {r['peak_rss_gb']:.2f} GB |")
            if summary["device"] == "cuda":
                row += f" {r.get('peak_cuda_gb', float('nan')):.2f} GB |"
            L.append(row)
        L.append("")
        L.append("\"-\": no such step in this version of `instancefcn_d2.inference` (the tight boxes of the "
                 "pasted masks come out of `paste_masks_binary`). "
                 "\"after backbone\" = (total - backbone) / total, i.e. everything but the backbone, "
                 "counting the pyramid resizing/normalisation (in \"other\") against it. Peak RSS is the "
                 "whole process (Python, torch, model) and GB here are GiB.")
        L.append("")

        L.append("## Scale of work")
        L.append("")
        L.append("| image | proposals req / out | pyramid levels | positions (all levels) | assembled windows "
                 "| assembling | paste + binarise | total |")
        L.append("|---|---|---|---|---|---|---|---|")
        order = sorted(ifcn, key=lambda kv: (kv[1]["detections_per_image"] != 1000, kv[1]["size"][0],
                                             kv[1]["detections_per_image"]))
        for name, r in order:
            st = r["stages_s"]
            L.append(f"| {r['size'][0]}x{r['size'][1]} | {r['detections_per_image']} / {r['proposals_out']} | "
                     f"{len(r['pyramid_levels'])} (largest {r['pyramid_levels'][-1][0]}x{r['pyramid_levels'][-1][1]}) | "
                     f"{r['positions_total']} | {r['assembled_windows_total']} (x {r['window_cells']} cells) | "
                     f"{_fmt_s(st['assembling'])} | {_fmt_s(st['paste_binarize'])} | {_fmt_s(r['total_s'])} |")
        L.append("")
        L.append("The pyramid's shorter sides are absolute (not relative to the input), so the backbone cost "
                 "depends on the aspect ratio, not on the input size; assembling is bounded by "
                 "`TOPK_PER_SCALE` windows per level, pasting by the kept proposals times their box areas.")
        L.append("")

    if summary["flops"]:
        L.append("## FLOPs (backbone + heads, summed over the pyramid levels)")
        L.append("")
        L.append("fvcore `FlopCountAnalysis` counts multiply-adds; FLOPs below are 2 x that, as for the GEMM "
                 "peak (2 n^3 per `torch.mm`). A ratio near or above 1 is possible: oneDNN's direct 3x3 "
                 "convolution kernels can outrun the BLAS sgemm behind `torch.mm` on some CPUs.")
        L.append("")
        L.append("| image | GFLOPs (backbone) | backbone + heads time | achieved GFLOP/s | vs GEMM peak |")
        L.append("|---|---|---|---|---|")
        for name, f in summary["flops"].items():
            r = results[name]
            L.append(f"| {r['size'][0]}x{r['size'][1]} | {f['gflops_forward']:.0f} ({f['gflops_backbone']:.0f}) | "
                     f"{_fmt_s(f['backbone_heads_s'])} | {f['achieved_gflops_per_s']:.1f} | {f['vs_gemm_peak']:.2f} |")
        L.append("")

    mr = [(k, v) for k, v in results.items() if k.startswith("mask_rcnn") and _ok(v)]
    if mr:
        L.append("## Mask R-CNN R50-FPN (detectron2 model zoo config, random weights), same machine and images")
        L.append("")
        L.append("| image | resized to | SCORE_THRESH_TEST | RPN proposals | detections | time | ours / theirs | peak RSS |")
        L.append("|---|---|---|---|---|---|---|---|")
        ours_by_size = {tuple(r["size"]): r["total_s"] for _, r in ifcn if r["detections_per_image"] == 1000}
        for name, r in mr:
            o = ours_by_size.get(tuple(r["size"]))
            L.append(f"| {r['size'][0]}x{r['size'][1]} | {r['resized_to'][0]}x{r['resized_to'][1]} | "
                     f"{r['score_thresh_test']} | {r.get('rpn_proposals_out')} | {r['detections_out']} | "
                     f"{_fmt_s(r['total_s'])} | {_fmt(o / r['total_s'] if o else None, '{:.1f}')} | "
                     f"{r['peak_rss_gb']:.2f} GB |")
        L.append("")
        L.append("Random weights, with every FrozenBatchNorm2d's statistics set to those of its input on the "
                 "benchmark image (one untimed forward) so that activations stay O(1) as in a trained "
                 "network and the RPN passes its full 1000 proposals to the ROI heads (without it the "
                 "activations reach ~1e4 and only ~2 proposals survive). The near-uniform class scores of the "
                 "random box predictor stay below the default `SCORE_THRESH_TEST` (0.05), so that row has "
                 "no or few detections and the mask head barely runs; the `SCORE_THRESH_TEST` 0 row gives the "
                 "maximum of 100 detections (mask head + pasting of 100 masks), a trained model's workload. "
                 "Resizing to the test size is timed (as InstanceFCN's pyramid resizing is). "
                 + ("Quick run: test size = the small image itself." if quick else ""))
        fr = summary["flops"].get(summary.get("headline_job") or "") if summary["flops"] else None
        if fr and summary.get("post_backbone_fraction") is not None:
            L.append("")
            L.append(f"Where the gap comes from: the paper's backbone and pyramid. VGG-16 with a stride-8 "
                     f"dilated conv5 over six scales (up to 900 px on the shorter side) costs "
                     f"{fr['gflops_forward']:.0f} GFLOPs per {summary['headline_image']} image, run at "
                     f"{fr['vs_gemm_peak']:.2f} of the GEMM peak; everything after the backbone is "
                     f"{100 * summary['post_backbone_fraction']:.0f}% of our time. Mask R-CNN runs a "
                     f"ResNet-50-FPN once at 800 px.")
        L.append("")

    L.append("## GPU")
    L.append("")
    if device_is_cuda(summary):
        L.append("The rows above ran on " + (summary["machine"].get("gpu_name") or "CUDA") + ". The paper's "
                 "anchor: 1.50 s per image on a K40 GPU (VGG-16, six scales).")
    else:
        L.append("No GPU was available for this run. `python tools/benchmark.py --device cuda "
                 "[--amp bf16|fp16]` runs the same measurements on CUDA (peak memory from "
                 "`torch.cuda.max_memory_allocated`). The paper's anchor: 1.50 s per image on a K40 GPU "
                 "(VGG-16, six scales).")
    L.append("")

    tr = [(k, v) for k, v in results.items() if k.startswith("train") and _ok(v)]
    if tr:
        L.append("## Training time per iteration (fp32, batch 1, SGD step included)")
        L.append("")
        L.append("| setting | config | image | FREEZE_AT | time / iter | peak RSS |" +
                 (" peak CUDA |" if summary["device"] == "cuda" else ""))
        L.append("|---|---|---|---|---|---|" + ("---|" if summary["device"] == "cuda" else ""))
        for name, r in tr:
            row = (f"| {'quick-start' if 'quickstart' in name else 'paper scale'} | `{r['config']}` | "
                   f"{r['size'][0]}x{r['size'][1]} | {r['freeze_at']} | {_fmt_s(r['iter_s'])} | {r['peak_rss_gb']:.2f} GB |")
            if summary["device"] == "cuda":
                row += f" {r.get('peak_cuda_gb', float('nan')):.2f} GB |"
            L.append(row)
        L.append("")
        L.append("Synthetic image with three rectangular objects (PolygonMasks), one at the window's canonical "
                 f"size (96 px) so that positive windows exist; median of {args.train_iters} iterations after "
                 f"{args.warmup} warm-up; optimizer from `detectron2.solver.build_optimizer` (the config's "
                 "SGD settings and gradient clipping).")
        L.append("")

    failed = [k for k, v in results.items() if not _ok(v)]
    if failed:
        L.append("## Failed measurements")
        L.append("")
        for k in failed:
            L.append(f"- `{k}`: {results[k]['error'].splitlines()[-1] if results[k]['error'] else 'error'}")
        L.append("")
    return "\n".join(L) + "\n"


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.worker_out)
        return 0
    _quiet()
    import torch

    import instancefcn_d2  # noqa: F401

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.train_iters is None:
        args.train_iters = 2 if args.quick else 3
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.weights is None:
        default = os.path.join(REPO, "weights", "vgg16_caffe_imagenet.pth")
        weights = default if os.path.exists(default) else ""
    else:
        weights = "" if args.weights.lower() == "none" else os.path.abspath(args.weights)

    def log(msg):
        print(f"[benchmark] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    machine = machine_info(device, args.threads)
    if device == "cpu":
        sizes = (512, 1024) if args.quick else (1024, 2048, 4096)
    else:
        sizes = (2048, 4096) if args.quick else (4096, 8192)
    gemm = gemm_peak(device, None if args.amp == "none" else args.amp, sizes, 5, args.threads)
    log(f"GEMM peak {gemm['flops_per_s'] / 1e9:.1f} GFLOP/s (best of {', '.join(map(str, sizes))}: "
        f"{gemm['n']}x{gemm['n']} {gemm['dtype']})")
    jobs = plan(args, device, weights)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        # Whole names, or a prefix ending at "_": "mask_rcnn" picks all three Mask R-CNN rows but
        # "ifcn_480x640_100" does not also pick "ifcn_480x640_1000".
        jobs = [(n, sp) for n, sp in jobs if any(n == w or n.startswith(w + "_") for w in wanted)]
        if not jobs:
            raise SystemExit(f"--only {args.only!r} matches none of: {', '.join(n for n, _ in plan(args, device, weights))}")
    md_path = os.path.join(args.out_dir, "BENCHMARKS.md")
    json_path = os.path.join(args.out_dir, "results", "benchmark.json")

    def write(results, done):
        # Rewritten after every measurement, so an interrupted run still leaves its numbers.
        summary = summarise(results, machine, gemm, args, device, weights)
        summary["wall_s"] = time.perf_counter() - t_start
        summary["complete"] = done
        summary["measurements_planned"] = [n for n, _ in jobs]
        md = render_markdown(summary, results, args)
        if not done:
            md = md.replace("\n", f"\n\n**Partial: {len(results)} of {len(jobs)} measurements so far.**\n", 1)
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(dict(summary, results=results), f, indent=2, allow_nan=True)
        with open(md_path, "w") as f:
            f.write(md)
        return md

    results = {}
    for name, spec in jobs:
        log(f"{name} ...")
        results[name] = run_job(spec, log)
        r = results[name]
        if _ok(r):
            t = r.get("total_s", r.get("iter_s"))
            log(f"  {name}: {_fmt_s(t)} (job {r['job_wall_s']:.1f}s)")
        if len(results) < len(jobs):
            write(results, done=False)
    md = write(results, done=True)
    print(md)
    log(f"done in {time.perf_counter() - t_start:.1f}s; wrote {md_path} and {json_path}")
    return 0 if all(_ok(v) for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
