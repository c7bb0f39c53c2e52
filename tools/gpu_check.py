#!/usr/bin/env python
"""Everything that needs a GPU, in one command that fits in five minutes on one H100.

    python tools/coco_sample.py                  # once, where the registry is reachable
    python tools/gpu_check.py [--iters 100] [--budget-s 280] [--out results/gpu_check.json]

Steps, in this order (each timed; one that fails is recorded and the next runs):

1. ``pytest tests -k cuda``: the CUDA tests (skipped on a CPU machine; here a skip is a failure);
2. every COCO config (tests/integration/test_coco_configs.py lists them) on the COCO sample at
   the config's full input size: ``--iters`` training iterations at IMS_PER_BATCH ``--batch``
   (BASE_LR scaled linearly, as tools/coco_overfit.py), then ``--eval-only`` with the trained
   weights, in fp32;
3. the same training with ``SOLVER.AMP.ENABLED True`` (its final evaluation is the trainer's);
4. the benchmark's CUDA rows (``python -m tools.benchmark --device cuda --only ...``).

A step that would start past ``--budget-s`` is recorded as "not run (budget)" rather than
overrunning. Prints a summary table and writes ``--out`` (the machine, every step's status,
seconds, loss terms at the start and end, mask AR@100). Needs a CUDA GPU: without one it
stops before any work. The data root (default datasets/coco_sample) and the ImageNet VGG-16
(weights/) must be on the machine: the GPU machine reaches no registry.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

COCO_CONFIGS = [
    "configs/InstanceFCN-VGG16-COCO.yaml",
    "configs/InstanceFCN-VGG16-COCO2017.yaml",
    "configs/InstanceFCN-VGG16-FPN-COCO.yaml",
    "configs/InstanceFCN-R50-FPN-COCO.yaml",
    "configs/InstanceFCN-R101-FPN-COCO.yaml",
    "configs/open_world/InstanceFCN-VGG16-COCO-VOC-to-nonVOC.yaml",
    "configs/open_world/InstanceFCN-VGG16-FPN-COCO-VOC-to-nonVOC.yaml",
    "configs/open_world/InstanceFCN-R50-FPN-COCO-VOC-to-nonVOC.yaml",
]
BENCHMARK_ROWS = "ifcn_800x1200_1000,ifcn_vgg16_fpn_800x1200_1000,ifcn_r50_fpn_800x1200_1000,mask_rcnn_800x1200"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=100, help="training iterations per config and precision")
    ap.add_argument("--batch", type=int, default=2, help="IMS_PER_BATCH (BASE_LR scaled linearly)")
    ap.add_argument("--budget-s", type=float, default=280.0, help="no step starts after this many seconds")
    ap.add_argument("--datasets", default=os.path.join(REPO, "datasets", "coco_sample"),
                    help="DETECTRON2_DATASETS holding the COCO sample (tools/coco_sample.py)")
    ap.add_argument("--configs", default=",".join(COCO_CONFIGS))
    ap.add_argument("--benchmark-rows", default=BENCHMARK_ROWS, help="'' skips the benchmark")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="the same steps on the CPU at shorter side 160 (checks this script, not the GPU)")
    ap.add_argument("--output-root", default=os.path.join(REPO, "output", "gpu_check"))
    ap.add_argument("--out", default=os.path.join(REPO, "results", "gpu_check.json"))
    args = ap.parse_args(argv)
    if args.iters < 1 or args.batch < 1 or args.budget_s <= 0:
        ap.error("--iters, --batch and --budget-s must be positive")
    configs = [c for c in args.configs.split(",") if c]
    missing = [c for c in configs if not os.path.isfile(os.path.join(REPO, c))]
    if missing:
        ap.error(f"--configs: no such config file(s) {missing}")
    args.configs = configs
    return args


def plan(args):
    """``[(step name, kind, payload)]`` in the order they run."""
    steps = [] if args.skip_tests else [("cuda tests", "pytest", None)]
    steps += [(f"{os.path.basename(c)[:-5]} fp32", "train", (c, False)) for c in args.configs]
    steps += [(f"{os.path.basename(c)[:-5]} amp", "train", (c, True)) for c in args.configs]
    if args.benchmark_rows:
        steps.append(("benchmark cuda rows", "benchmark", args.benchmark_rows))
    return steps


def format_summary(results):
    """A plain-text table of the recorded steps."""
    lines = [f"{'step':58s} {'status':22s} {'s':>6s}  detail"]
    for r in results:
        detail = r.get("detail", "")
        lines.append(f"{r['step']:58s} {r['status']:22s} {r.get('seconds', 0):6.1f}  {detail}")
    ok = sum(r["status"] == "ok" for r in results)
    lines.append(f"{ok} of {len(results)} steps ok")
    return "\n".join(lines)


def write_record(path, machine, args, results):
    from instancefcn_d2.fileio import atomic_write

    record = {"what": "GPU check (tools/gpu_check.py): CUDA tests, every COCO config on the COCO sample "
                      "in fp32 and AMP, --eval-only, the benchmark's CUDA rows",
              "settings": {"iters": args.iters, "ims_per_batch": args.batch, "budget_s": args.budget_s},
              "command": " ".join(["python", "tools/gpu_check.py", *sys.argv[1:]]),
              "machine": machine, "steps": results,
              "all_ok": bool(results) and all(r["status"] == "ok" for r in results)}
    atomic_write(path, lambda f: json.dump(record, f, indent=2), "w")
    return record


def _train(config, amp, args):
    import train_net
    from detectron2.engine import default_argument_parser
    from coco_overfit import scaled_solver, summarise_losses

    out = os.path.join(args.output_root, os.path.basename(config)[:-5] + ("_amp" if amp else "_fp32"))
    opts = ["MODEL.DEVICE", "cpu" if args.cpu_dry_run else "cuda", "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", "()",
            "SOLVER.WARMUP_ITERS", str(max(1, args.iters // 10)), "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters),
            "SOLVER.AMP.ENABLED", str(amp), "OUTPUT_DIR", out, *scaled_solver(config, args.batch)]
    if args.cpu_dry_run:
        opts += ["INPUT.MIN_SIZE_TRAIN", "(160,)", "INPUT.MAX_SIZE_TRAIN", "256", "DATALOADER.NUM_WORKERS", "0",
                 "MODEL.INSTANCEFCN.TEST_SCALES", "[160]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "256"]
    if "R50" in config or "R101" in config:
        opts += ["MODEL.WEIGHTS", ""]  # detectron2's ImageNet ResNets are not reachable from the GPU machine
    cfg_path = os.path.join(REPO, config)
    train_net.main(default_argument_parser().parse_args(["--config-file", cfg_path, *opts]))
    losses = summarise_losses(out)
    finite = all(math.isfinite(v) for t in losses.values() for v in (t["start"], t["end"]))
    res = None
    if not amp:  # --eval-only with the trained weights
        res = train_net.main(default_argument_parser().parse_args(
            ["--eval-only", "--config-file", cfg_path, *opts, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")]))
        files = [os.path.join(out, "inference", n) for n in os.listdir(os.path.join(out, "inference"))]
        exported = all(os.path.isfile(os.path.join(d, f)) for d in files
                       for f in ("segment_proposals_coco.json", "box_proposals.pkl"))
    else:
        with open(os.path.join(out, "proposal_ar.json")) as f:
            res, exported = json.load(f), True
    ar = res["segm_proposals"].get("AR@100")
    status = "ok" if finite and exported else ("non-finite loss" if not finite else "exports missing")
    detail = " ".join(f"{t} {v['start']:.3g}->{v['end']:.3g}" for t, v in losses.items()) + f" mask AR@100 {ar}"
    return status, detail, {"losses": losses, "mask_ar@100": ar, "output_dir": out}


def _pytest():
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "-k", "cuda", "-q", "-rs", "-p", "no:cacheprovider"],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    status = "ok" if proc.returncode == 0 and "skipped" not in last else "failed"
    return status, last, {"tail": proc.stdout[-3000:]}


def _benchmark(rows, args, left_s):
    out = os.path.join(args.output_root, "benchmark")
    cmd = [sys.executable, "-m", "tools.benchmark", "--device", "cuda", "--repeats", "3", "--skip-train",
           "--only", rows, "--output-dir", out]
    try:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=max(10.0, left_s))
    except subprocess.TimeoutExpired:
        return "timed out", f"after {left_s:.0f} s", {}
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return ("ok" if proc.returncode == 0 else "failed"), last, {"json": os.path.join(out, "benchmark.json"),
                                                                 "tail": proc.stdout[-3000:]}


def main(argv=None):
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_dry_run:
        raise SystemExit("tools/gpu_check.py needs a CUDA GPU: torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on the GPU machine.")
    if not os.path.isfile(os.path.join(args.datasets, "coco", "annotations", "instances_val2017.json")):
        raise SystemExit(f"No COCO sample under {args.datasets}: run `python tools/coco_sample.py` first "
                         "(where the package registry is reachable) and bring datasets/coco_sample along.")
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.datasets)  # before detectron2 is imported
    from machine import describe_machine

    machine = describe_machine(device="cpu" if args.cpu_dry_run else "cuda", gemm_sizes=())
    t0, results = time.perf_counter(), []
    for name, kind, payload in plan(args):
        elapsed = time.perf_counter() - t0
        if elapsed > args.budget_s:
            results.append({"step": name, "status": "not run (budget)", "seconds": 0.0})
            continue
        start = time.perf_counter()
        try:
            if kind == "pytest":
                status, detail, extra = _pytest()
            elif kind == "train":
                status, detail, extra = _train(*payload, args)
            else:
                status, detail, extra = _benchmark(payload, args, args.budget_s - elapsed)
        except Exception as e:  # recorded; the next step runs
            status, detail, extra = "error", f"{type(e).__name__}: {e}"[:300], {"traceback": traceback.format_exc()[-3000:]}
        results.append({"step": name, "status": status, "seconds": round(time.perf_counter() - start, 1),
                        "detail": detail, **extra})
        print(f"[gpu_check] {name}: {status} ({results[-1]['seconds']} s) {detail}", flush=True)
        write_record(args.out, machine, args, results)  # kept step by step
    record = write_record(args.out, machine, args, results)
    print(format_summary(results))
    print(f"Wrote {args.out}")
    return 0 if record["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
