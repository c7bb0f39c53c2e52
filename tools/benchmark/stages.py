"""Stage times from the ``torch.profiler.record_function`` labels the model carries.

``InstanceFCN`` labels its stages ``instancefcn.backbone``, ``.heads``, ``.assemble``,
``.select`` and ``.render``; nothing of the model is patched or wrapped here. Labels nest
(inference assembles inside ``select``), so each stage is timed *exclusive* of the labelled
stages inside it, and the stages plus ``other`` (resizing, normalisation, padding: everything
outside any label) add up to the run's total.
"""
import contextlib
import time

PREFIX = "instancefcn."
STAGES = ("backbone", "heads", "assemble", "select", "render")
# Operators reported inside a stage as well (they are part of its time, not extra).
OPS = {"nms": "torchvision::nms"}


def _sync(device):
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _duration_us(event, device):
    if device == "cuda":  # the kernels launched inside the range (and its children)
        return float(getattr(event, "device_time_total", 0.0) or getattr(event, "cuda_time_total", 0.0))
    return float(event.time_range.elapsed_us())


def exclusive_stage_seconds(events, device="cpu"):
    """``{stage: seconds}`` over profiler ``events`` (FunctionEvents with ``cpu_parent``), each
    labelled range minus the labelled ranges nested in it, for the :data:`STAGES` whose label
    occurs (a stage without its label is absent, not 0); ``{"op:nms": s}`` for :data:`OPS`."""
    out = {}
    for e in events:
        stage = e.name[len(PREFIX):] if e.name.startswith(PREFIX) else None
        if stage in STAGES:
            d = _duration_us(e, device) / 1e6
            out[stage] = out.get(stage, 0.0) + d
            parent = e.cpu_parent  # the nearest labelled range around this one loses its time
            while parent is not None and not parent.name.startswith(PREFIX):
                parent = parent.cpu_parent
            if parent is not None and parent.name[len(PREFIX):] in STAGES:
                outer = parent.name[len(PREFIX):]
                out[outer] = out.get(outer, 0.0) - d
    for key, op in OPS.items():
        out[f"op:{key}"] = sum(_duration_us(e, device) for e in events if e.name == op) / 1e6
    return out


def profiled_call(fn, device="cpu"):
    """Run ``fn()`` (an inference) under the profiler. Returns ``(result, total_s, stages)``: the
    wall time of the call (synchronised on CUDA) and :func:`exclusive_stage_seconds` with
    ``other`` added; raises when a stage's label is missing."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        total = time.perf_counter() - t0
    stages = exclusive_stage_seconds(prof.events(), device)
    missing = [s for s in STAGES if s not in stages]
    if missing:  # a renamed label must not silently read as a free stage
        raise RuntimeError(f"no {', '.join(PREFIX + s for s in missing)} range in the profile: the model's "
                           f"record_function labels changed; update tools/benchmark/stages.py")
    stages["other"] = total - sum(stages[s] for s in STAGES)
    return result, total, stages


def timed_call(fn, device="cpu"):
    """``(result, seconds)`` of ``fn()`` without the profiler (synchronised on CUDA)."""
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - t0


def autocast(device, amp):
    """``torch.autocast`` for ``amp`` in {"fp16", "bf16"}; a null context for None / "none"."""
    import torch

    if amp in (None, "none"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[amp])
