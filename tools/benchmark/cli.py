"""Command line, plan of measurements and runner (one fresh process per measurement)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tools.benchmark import MODELS, REPO, SCHEMA, __doc__ as PACKAGE_DOC
from tools.benchmark import calibration, report
from tools.benchmark.summary import BITMASK_ROW, PAIRS, ok, pair_detections, pair_rows, summarise

MASK_FORMAT_KEY = "MASK_FORMAT"
QUICK_SCALES = {"vgg16_pyramid": dict(test_scales=[64, 96, 128], test_max_size=256),
                "fpn": dict(test_scales=[128], test_max_size=256)}


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m tools.benchmark", description=PACKAGE_DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                    help="torch.autocast dtype of the inference rows (and the GEMM peak)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 5; --quick 1)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before each row (default 1)")
    ap.add_argument("--train-iters", type=int, default=None, help="timed training iterations (default 3; --quick 1)")
    ap.add_argument("--pairs", type=int, default=None,
                    help="repetitions of the interleaved (InstanceFCN row, Mask R-CNN row) pairs whose ratios "
                         "are reported as median and spread (default 3; --quick 1)")
    ap.add_argument("--quick", "--smoke", action="store_true",
                    help="every kind of measurement on tiny images, in this process except the memory rows: "
                         "a smoke run, not figures")
    ap.add_argument("--output-dir", default=os.path.join("output", "benchmark"),
                    help="writes benchmark.json and BENCHMARKS.md here (default: output/benchmark)")
    ap.add_argument("--write-repo-results", action="store_true",
                    help="also write results/benchmark.json and BENCHMARKS.md of the repository")
    ap.add_argument("--weights", choices=("auto", "none"), default="auto",
                    help="auto: each config's MODEL.WEIGHTS when that file is here, else random init")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every measurement")
    ap.add_argument("--only", default=None, metavar="NAME[,NAME...]",
                    help="run only these rows (whole names, or prefixes ending before a '_')")
    ap.add_argument("--memory-limit-gb", type=float, default=None,
                    help="memory a row may count on (default: MemAvailable); rows projected beyond it "
                         "are reported as projections")
    ap.add_argument("--skip-mask-rcnn", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    return ap


def plan(args, device, has_mask_format):
    """``[(name, spec)]``: the rows of this run, in order."""
    common = {"device": device, "amp": None if args.amp == "none" else args.amp, "weights": args.weights,
              "threads": args.threads, "warmup": args.warmup, "repeats": args.repeats}
    jobs = []

    def infer(name, model, size, dets, **kw):
        small = QUICK_SCALES["vgg16_pyramid" if model == "vgg16_pyramid" else "fpn"] if args.quick else {}
        jobs.append((name, dict(common, kind="infer_ifcn", model=model, size=list(size), detections=dets,
                                **small, **kw)))

    def memory(fmt, size, dets):
        # Peak RSS of one image in a fresh process: one run, no profiler.
        name = f"mem_{fmt}_{size[0]}x{size[1]}_{dets}"
        infer(name, "vgg16_pyramid", size, dets, mask_format=fmt if has_mask_format else None,
              repeats=1, warmup=0, profile=False)
        if fmt == "rle" and not has_mask_format:
            jobs[-1][1]["skip"] = (f"MODEL.INSTANCEFCN.{MASK_FORMAT_KEY} is not a config key in this checkout "
                                   "(issue 12 adds it); the rle row needs it")
        if fmt == "bitmask":  # its masks alone are N x H x W bytes
            jobs[-1][1]["mask_bytes"] = dets * size[0] * size[1]

    def mask_rcnn(name, size, **kw):
        if not args.skip_mask_rcnn:
            jobs.append((name, dict(common, kind="infer_mask_rcnn", size=list(size), amp=common["amp"], **kw)))

    def train(name, config, size):
        if not args.skip_train:
            jobs.append((name, dict(common, kind="train", config=config, size=list(size), iters=args.train_iters)))

    def pairs(size, **mask_rcnn_kw):
        # Each repetition runs every pair back to back (model row, then its Mask R-CNN row), so
        # that drift in the machine's speed hits both sides of a ratio alike.
        for r in range(args.pairs):
            for model, dets in dict.fromkeys(PAIRS.values()):
                ours, theirs = pair_rows(model, dets, args.quick, r)
                flops = r == 0 and dets == max(d for _, d in PAIRS.values())  # once per model
                dets = pair_detections(dets, args.quick)
                infer(ours, model, size, dets, flops=flops)
                mask_rcnn(theirs, size, detections=dets, score_thresh=0.0, **mask_rcnn_kw)

    if args.quick:
        infer("ifcn_128x160_1000", "vgg16_pyramid", (128, 160), 1000, flops=True)
        pairs((128, 160), min_size_test=128, max_size_test=256)
        memory("rle", (256, 320), 100)
        memory("bitmask", (256, 320), 100)
        jobs.append(("nms_128x160_300", dict(common, kind="nms", model="vgg16_pyramid", size=[128, 160],
                                             detections=300, **QUICK_SCALES["vgg16_pyramid"])))
        train("train_quickstart_160x160", "quickstart", (160, 160))
        return jobs
    infer("ifcn_480x640_1000", "vgg16_pyramid", (480, 640), 1000, flops=True)
    infer("ifcn_800x1200_1000", "vgg16_pyramid", (800, 1200), 1000, flops=True)
    infer("ifcn_240x320_1000", "vgg16_pyramid", (240, 320), 1000)
    infer("ifcn_480x640_100", "vgg16_pyramid", (480, 640), 100)
    infer("ifcn_480x640_5000", "vgg16_pyramid", (480, 640), 5000)
    # NMS off (NMS_THRESH 1.0): every requested proposal reaches pasting; no config runs this.
    infer("ifcn_480x640_5000_nms_off", "vgg16_pyramid", (480, 640), 5000, nms_thresh=1.0)
    jobs.append(("nms_480x640_5000", dict(common, kind="nms", model="vgg16_pyramid", size=[480, 640], detections=5000)))
    # SCORE_THRESH_TEST 0 in every Mask R-CNN row: it keeps all the detections asked for (100 or
    # 1000: mask head and pasting of each), as a trained model used for proposals does.
    pairs((800, 1200))
    memory("rle", (4000, 3000), 1000)
    memory("bitmask", (4000, 3000), 1000)
    train("train_quickstart_160x160", "quickstart", (160, 160))
    train("train_quickstart_fpn_160x160", "quickstart_fpn", (160, 160))
    train("train_paper_600x800", "vgg16_pyramid", (600, 800))
    return jobs


def run_in_process(spec, log):
    """One measurement in this process (smoke runs: saves an interpreter start per row)."""
    import traceback

    from tools.benchmark.workers import quiet, run

    t0 = time.perf_counter()
    try:
        with quiet():
            res = run(spec)
    except Exception as e:  # reported like a failed process, so that the other rows still run
        log(f"  FAILED after {time.perf_counter() - t0:.1f}s:\n{traceback.format_exc()}")
        return {"error": f"{type(e).__name__}: {e}", "spec": spec}
    return dict(res, job_wall_s=time.perf_counter() - t0, in_process=True)


def run_job(spec, log):
    """One measurement in a fresh interpreter: its result dict, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tools.benchmark.workers", json.dumps(spec), out],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            log(f"  FAILED (exit {proc.returncode}) after {wall:.1f}s:\n{tail}")
            return {"error": f"exit {proc.returncode}: {tail[-2000:]}", "spec": spec}
        with open(out) as f:
            res = json.load(f)
    res["job_wall_s"] = wall
    return res


def bitmask_projection(spec, results, quick):
    """Projected peak RSS (GiB) of the bitmask row: the rle row's peak (same image and
    pipeline, no (N, H, W) tensor) plus the N x H x W bytes of the masks, and its basis."""
    rle = results.get(BITMASK_ROW[quick].replace("bitmask", "rle"))
    if ok(rle):
        base, basis = rle["peak_rss_gb"], "peak RSS of the rle row"
    else:
        base = max((r["peak_rss_gb"] for n, r in results.items() if ok(r) and n.startswith("ifcn_")), default=0.0)
        basis = "largest peak RSS of the inference rows (no rle row)"
    return base + spec["mask_bytes"] / 1024 ** 3, basis + " + N x H x W bytes of bool masks"


def main(argv=None):
    args = build_parser().parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.write_repo_results and args.quick:
        raise SystemExit("--write-repo-results with --quick: a smoke run's numbers are not figures")
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    args.train_iters = args.train_iters if args.train_iters is not None else (1 if args.quick else 3)
    args.pairs = args.pairs if args.pairs is not None else (1 if args.quick else 3)
    if args.repeats < 1 or args.warmup < 0 or args.train_iters < 1 or args.pairs < 1:
        raise SystemExit("--repeats, --train-iters and --pairs must be >= 1, --warmup >= 0")

    def log(msg):
        print(f"[benchmark] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    machine = calibration.describe(device, args.threads)  # first: the load average as found
    if not machine["idle"]:
        log(f"WARNING: load average {machine['load_average_at_start']} at the start: not an idle machine; "
            "recorded as \"idle\": false")
    gemm = calibration.peak_gemm(device, args.amp, args.quick, args.threads)
    log(f"GEMM peak {gemm['flops_per_s'] / 1e9:.1f} GFLOP/s ({gemm['n']}x{gemm['n']} {gemm['dtype']})")

    from tools.benchmark.measures import build_cfg

    has_mask_format = MASK_FORMAT_KEY in build_cfg(MODELS["vgg16_pyramid"], "cpu").MODEL.INSTANCEFCN
    jobs = plan(args, device, has_mask_format)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        names = [n for n, _ in jobs]
        jobs = [(n, sp) for n, sp in jobs if any(n == w or n.startswith(w + "_") for w in wanted)]
        if not jobs:
            raise SystemExit(f"--only {args.only!r} matches none of: {', '.join(names)}")
    available = (args.memory_limit_gb * 1024 ** 3 if args.memory_limit_gb is not None
                 else calibration.mem_available_bytes())
    out_dir = os.path.abspath(args.output_dir)
    targets = [(os.path.join(out_dir, "benchmark.json"), os.path.join(out_dir, "BENCHMARKS.md"))]
    if args.write_repo_results:
        targets.append((os.path.join(REPO, "results", "benchmark.json"), os.path.join(REPO, "BENCHMARKS.md")))
    command = "python -m tools.benchmark " + " ".join(argv if argv is not None else sys.argv[1:])

    gemm_after = {}

    def write(results, done):
        # Rewritten after every row, so that an interrupted run still leaves its numbers.
        data = {"schema": SCHEMA, "command": command.strip(), "device": device, "amp": args.amp,
                "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup, "warmup_scope": "whole model",
                "pairs": args.pairs, "gemm_peak_after": gemm_after or None,
                "train_iters": args.train_iters, "threads": args.threads, "weights": args.weights,
                "machine": dict(machine, load_average_at_end=[round(x, 2) for x in os.getloadavg()]),
                "gemm_peak": gemm, **summarise(results, args.quick, gemm["flops_per_s"]),
                "wall_s": time.perf_counter() - t_start, "complete": done,
                "rows_planned": [n for n, _ in jobs], "results": results}
        for json_path, md_path in targets:
            os.makedirs(os.path.dirname(json_path), exist_ok=True)
            with open(json_path, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            with open(md_path, "w") as f:
                f.write(report.render(data, os.path.relpath(json_path, os.path.dirname(md_path))))

    results = {}
    for name, spec in jobs:
        skip = spec.pop("skip", None)
        if skip:
            results[name] = {"skipped": skip, "size": spec["size"]}
        elif "mask_bytes" in spec and not calibration.fits_in_memory(
                bitmask_projection(spec, results, args.quick)[0] * 1024 ** 3, available):
            projected, basis = bitmask_projection(spec, results, args.quick)
            results[name] = {"skipped": f"projected peak RSS {projected:.1f} GB does not fit the memory available "
                                        f"({(available or 0) / 1024 ** 3:.1f} GB)", "size": spec["size"],
                             "projected_peak_rss_gb": projected, "projection": basis}
        else:
            log(f"{name} ...")
            # --quick: the rows share this process, except the memory rows, whose peak RSS
            # must be their own (interpreter start-ups were most of a smoke run's time).
            fresh = not args.quick or name.startswith("mem_")
            results[name] = (run_job if fresh else run_in_process)(spec, log)
        r = results[name]
        log(f"  {name}: " + (r.get("skipped") or r.get("error", "")[:200] if not ok(r) else
                            f"{next(r[k] for k in ('total_s', 'iter_s', 'per_level_first_s') if k in r):.3f}s "
                            f"(job {r['job_wall_s']:.1f}s)"))
        write(results, done=False)
    # The GEMM peak again: a machine that slowed down (or sped up) during the run shows here.
    gemm_after.update(calibration.peak_gemm(device, args.amp, args.quick, args.threads))
    log(f"GEMM peak after the rows {gemm_after['flops_per_s'] / 1e9:.1f} GFLOP/s")
    write(results, done=True)
    log(f"done in {time.perf_counter() - t_start:.1f}s; wrote " + ", ".join(p for pair in targets for p in pair))
    return 0 if all(ok(r) or "skipped" in r for r in results.values()) else 1
