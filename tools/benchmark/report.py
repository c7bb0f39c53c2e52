"""BENCHMARKS.md from a benchmark JSON, through ``template.md``: the tables are built here,
the prose lives in the template, and nothing in the Markdown is typed by hand.

  python -m tools.benchmark.report output/benchmark/benchmark.json [-o BENCHMARKS.md]
"""
import argparse
import math
import os
import string
import sys

from tools.benchmark import SCHEMA

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "template.md")
STAGES = (("backbone", "backbone"), ("heads", "heads"), ("assemble", "assemble"), ("select", "select"),
          ("render", "render"), ("op:nms", "(NMS)"), ("other", "other"))
NONE = "–"


def _ok(r):
    return isinstance(r, dict) and "error" not in r and "skipped" not in r


def s_(x):
    """Seconds, readable."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NONE
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def f_(x, spec="{:.3f}"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return NONE
    return spec.format(x)


def table(header, rows, empty="_Not measured in this run._"):
    if not rows:
        return empty
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _size(r):
    return f"{r['size'][0]}x{r['size'][1]}"


def _rows(data, prefix):
    return [(n, r) for n, r in data["results"].items() if n.startswith(prefix) and _ok(r)]


def machine(data):
    m, g = data["machine"], data["gemm_peak"]
    idle = "yes" if m.get("idle") else "**no**: other work shared the CPU; timings are not idle-machine figures"
    rows = [("CPU", f"{m['cpu_model']} ({m['logical_cores']} logical cores)"),
            ("torch threads", m["torch_num_threads"]),
            ("device", data["device"] + (f" ({m['gpu_name']})" if m.get("gpu_name") else "")),
            ("autocast", f"{data['amp']} (inference rows and GEMM peak)"),
            ("torch / detectron2 / python", f"{m['torch_version']} / {m['detectron2_version']} / {m['python_version']}"),
            ("git commit", f"`{m.get('git_commit')}`"),
            ("load average at start (1, 5, 15 min) / at end", f"{m['load_average_at_start']} / {m.get('load_average_at_end', NONE)}"),
            ("idle at start", idle),
            (f"GEMM peak (`torch.mm` {g['dtype']}, best of sizes {', '.join(str(r['n']) for r in g.get('sizes', []))})",
             f"{g['flops_per_s'] / 1e9:.1f} GFLOP/s at {g['n']}x{g['n']}")]
    after = data.get("gemm_peak_after")
    rows.append(("GEMM peak after the rows", f"{after['flops_per_s'] / 1e9:.1f} GFLOP/s at {after['n']}x{after['n']}"
                 if after else "not measured in this run"))
    return table(("", ""), rows)


def targets(data):
    return table(("target", "value (median [min, max] over repetitions)", "met (by every repetition)"),
                 [(t["target"], f_(t["value"]) + (f" [{f_(t['spread'][0])}, {f_(t['spread'][1])}] ({t['runs']} runs)"
                                                  if t.get("spread") else " (one row)"),
                   "yes" if t["met"] else "**no**") for t in data["targets"]],
                 empty="_No target could be evaluated from this run's rows._")


def pairs(data):
    """Each interleaved ratio: per repetition, median and spread."""
    from tools.benchmark.summary import PAIRS, pair_detections

    rows = []
    for key, (model, dets) in PAIRS.items():
        sp = data.get("spreads", {}).get(key)
        if sp:
            rows.append((f"`{key}`", model, pair_detections(dets, data["quick"]), ", ".join(f"{v:.3f}" for v in sp["runs"]), f"{sp['median']:.3f}",
                         f"[{sp['min']:.3f}, {sp['max']:.3f}]"))
    return table(("ratio", "InstanceFCN model", "proposals = Mask R-CNN detections", "per repetition", "median",
                  "spread"), rows, empty="_No interleaved pairs in this run (older format: one row per side)._")


def headlines(data):
    rows = []
    for key, src in data["headline_rows"].items():
        value = data.get(key)
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {f_(v)}" for k, v in value.items())
            src = "; ".join(src.values())
        elif key.endswith("_bitmask") and data.get(key + "_projected"):
            value = f"{f_(value)} (projected)"
        else:
            value = f_(value)
        rows.append(f"| `{key}` | {value} | {f'`{src}`' if src else NONE} |")
    return "\n".join(rows)


def stages(data):
    rows = []
    for name, r in _rows(data, "ifcn_"):
        st, tot = r["stages_s"], r["profiled_total_s"]
        rows.append([f"`{name}`", _size(r), r.get("nms_thresh", NONE), f"{r['detections_per_image']} / {r['proposals_out']}",
                     s_(r["total_s"])]
                    + [f"{s_(st.get(k))} ({st.get(k, 0) / tot:.0%})" for k, _ in STAGES]
                    + [f"{r['post_backbone_fraction']:.1%}", f"{r['peak_rss_gb']:.2f} GB"]
                    + ([f"{r.get('peak_cuda_gb', float('nan')):.2f} GB"] if data["device"] == "cuda" else []))
    header = ["row", "image", "NMS_THRESH", "proposals req / out", "total"] + [t for _, t in STAGES] + ["after backbone", "peak RSS"]
    return table(header + (["peak CUDA"] if data["device"] == "cuda" else []), rows)


def work(data):
    rows = [(r["model"], _size(r), f"{len(r['test_scales'])} x {len(r['strides'])} (strides {r['strides']})",
             r["positions_total"], f"{sum(r['selected_windows_per_level'])} (x {r['window_cells']} cells)",
             r["topk_per_scale"], f"{r['detections_per_image']} / {r['proposals_out']}")
            for _, r in _rows(data, "ifcn_")]
    return table(("model", "image", "scales x levels", "positions", "windows to rendering", "TOPK_PER_SCALE",
                  "proposals req / out"), rows)


def by_model(data):
    src = data["headline_rows"]["vs_mask_rcnn_r50_fpn_by_model"]
    rows = [(model, f_(ratio, "{:.2f}"), src.get(model, NONE) if isinstance(src, dict) else NONE)
            for model, ratio in data["vs_mask_rcnn_r50_fpn_by_model"].items()]
    return table(("model", "time / Mask R-CNN R50-FPN", "from"), rows)


def memory(data):
    rows = []
    for name, r in data["results"].items():
        if not name.startswith("mem_"):
            continue
        fmt = name.split("_")[1]
        if _ok(r):
            rows.append((fmt, _size(r), f"{r['detections_per_image']} / {r['proposals_out']}",
                         f"{r['peak_rss_gb']:.2f} GB", "measured in a fresh process"))
        elif "projected_peak_rss_gb" in r:
            rows.append((fmt, _size(r), NONE, f"{r['projected_peak_rss_gb']:.2f} GB (projected)",
                         f"{r['skipped']}; projection: {r['projection']}"))
        else:
            rows.append((fmt, _size(r) if "size" in r else NONE, NONE, NONE, r.get("skipped") or "failed"))
    return table(("MASK_FORMAT", "image", "proposals req / out", "peak RSS", "how"), rows)


def flops(data):
    rows = []
    for name, f in data["flops"].items():
        r = data["results"][name]
        rows.append((r["model"], _size(r), f"{f['gflops_forward']:.0f} ({f['gflops_backbone']:.0f})",
                     s_(f["backbone_heads_s"]), f"{f['achieved_gflops_per_s']:.1f}", f"{f['vs_gemm_peak']:.2f}"))
    return table(("model", "image", "GFLOPs (backbone)", "backbone + heads time", "achieved GFLOP/s",
                  "vs GEMM peak"), rows)


def nms(data):
    rows = [(r["model"], _size(r), r["windows"], r["nms_thresh"], r["detections_per_image"],
             f"{s_(r['one_pass_s'])} / {r['one_pass_proposals']}", f"{s_(r['per_level_first_s'])} / {r['per_level_first_proposals']}",
             f"{r['speedup']:.1f}x") for _, r in _rows(data, "nms_")]
    return table(("model", "image", "windows", "NMS_THRESH", "cap", "one pass: time / kept",
                  "per level first: time / kept", "speed-up"), rows)


def mask_rcnn(data):
    rows = [(f"`{name}`", _size(r), f"{r['resized_to'][0]}x{r['resized_to'][1]}", r["score_thresh_test"],
             r.get("rpn_proposals_out"), f"{r.get('detections_per_image', NONE)} / {r['detections_out']}",
             s_(r["total_s"]), f"{r['peak_rss_gb']:.2f} GB") for name, r in _rows(data, "mask_rcnn")]
    return table(("row", "image", "resized to", "SCORE_THRESH_TEST", "RPN proposals", "detections req / out", "time",
                  "peak RSS"), rows)


def nms_scope(data):
    if data.get("warmup_scope") == "whole model":  # this format runs the configs' own NMS
        return ("Each row at the `NMS_THRESH` of its column: the config's own, except a row named `_nms_off` "
                "(1.0: NMS keeps everything and the requested number of proposals reaches pasting; no config "
                "runs it)")
    return ("Every row at `NMS_THRESH` 1.0 (this run predates the rows at the configs' own threshold): NMS "
            "keeps everything and the requested number of proposals reaches pasting, which no config does")


def warmup_scope(data):
    if data.get("warmup_scope") == "whole model":
        return "whole-model warm-up run(s) per row, InstanceFCN's and Mask R-CNN's alike"
    return ("warm-up run(s) per row (this run predates the common warm-up: InstanceFCN rows warmed window "
            "selection only, Mask R-CNN rows the whole model)")


def training(data):
    rows = [(name, f"`{r['config']}`", _size(r), r["freeze_at"], r["weights"], s_(r["iter_s"]), f"{r['peak_rss_gb']:.2f} GB")
            for name, r in _rows(data, "train")]
    return table(("row", "config", "image", "FREEZE_AT", "weights", "time / iter", "peak RSS"), rows)


def gpu(data):
    anchor = "The paper's anchor: 1.50 s per image on a K40 GPU (VGG-16, six scales)."
    if data["device"] == "cuda":
        return f"The rows above ran on {data['machine'].get('gpu_name') or 'CUDA'}. {anchor}"
    return ("No GPU in this run. `python -m tools.benchmark --device cuda [--amp bf16|fp16]` runs the same rows on "
            f"CUDA (stage times from the kernels under each label; peak memory from `torch.cuda.max_memory_allocated`). {anchor}")


def not_run(data):
    lines = [f"- `{n}`: skipped: {r['skipped']}" for n, r in data["results"].items() if "skipped" in r]
    lines += [f"- `{n}`: **failed**: {(r['error'].strip().splitlines() or ['error'])[-1]}"
              for n, r in data["results"].items() if "error" in r]
    return "## Rows not measured\n\n" + "\n".join(lines) if lines else ""


def processes(data):
    if any(r.get("in_process") for r in data["results"].values()):  # --quick
        return "the rows in the benchmark's own process except the memory rows"
    return "each row in a fresh process"


def render(data, json_name="results/benchmark.json"):
    status = ("" if data["complete"] else
              f"**Partial: {len(data['results'])} of {len(data['rows_planned'])} rows so far.** ")
    status += ("**Quick smoke run: tiny images, not figures.**" if data["quick"] else "")
    with open(TEMPLATE) as f:
        text = string.Template(f.read()).substitute(
            title_suffix=" (quick smoke run)" if data["quick"] else "", json_name=json_name,
            command=data["command"], status=status, repeats=data["repeats"], warmup=data["warmup"],
            train_iters=data["train_iters"], processes=processes(data), machine=machine(data), targets=targets(data),
            headlines=headlines(data), pairs=pairs(data), warmup_scope=warmup_scope(data), nms_scope=nms_scope(data), stages=stages(data), work=work(data), by_model=by_model(data),
            memory=memory(data), nms=nms(data), flops=flops(data), mask_rcnn=mask_rcnn(data), training=training(data),
            gpu=gpu(data), not_run=not_run(data))
    return text.rstrip() + "\n"


def main(argv=None):
    import json

    ap = argparse.ArgumentParser(prog="python -m tools.benchmark.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="a benchmark.json written by python -m tools.benchmark")
    ap.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    args = ap.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    if data.get("schema") != SCHEMA:
        raise SystemExit(f"{args.json}: not written by python -m tools.benchmark (schema {data.get('schema')}, "
                         f"expected {SCHEMA}); rerun the benchmark")
    where = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
    text = render(data, os.path.relpath(os.path.abspath(args.json), where))
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
