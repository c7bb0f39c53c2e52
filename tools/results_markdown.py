"""Markdown pieces every results block shares: figures, tables, the machine line, AR keys.
tools/render_results.py and tools/peers_block.py import them; real_data_block is handed them."""

AR_KEYS = ("AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000")
AR_HEAD = ("AR@10", "AR@100", "AR@1000", "AR_S@1000", "AR_M@1000", "AR_L@1000")


def fmt(v):
    """Figures to one decimal; None (no ground truth in that range) as '–'."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return lines + ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]


def machine_line(m):
    if not isinstance(m, dict):
        return "Machine: not recorded in this file."
    load = m.get("load_average_at_start") or []
    idle = m.get("idle")
    state = "idle" if idle else "NOT idle: other work shared the cores, timings are not idle-machine figures"
    parts = [f"Machine: {m.get('cpu_model', '?')}, {m.get('logical_cores', '?')} logical cores, "
             f"{m.get('torch_num_threads', '?')} torch threads"]
    if m.get("gpu_name"):
        parts.append(f"GPU {m['gpu_name']}")
    if m.get("gemm_peak_gflops_per_s") is not None:
        parts.append(f"GEMM peak {m['gemm_peak_gflops_per_s']:.1f} GFLOP/s")
    parts.append("load average at start " + " / ".join(f"{x:.2f}" for x in load) + f" ({state})")
    parts.append(f"torch {m.get('torch_version', '?')}, detectron2 {m.get('detectron2_version', '?')}")
    parts.append(f"commit {(m.get('git_commit') or 'unknown')}")
    return "; ".join(parts) + "."
