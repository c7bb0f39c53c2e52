"""The benchmark's own arithmetic against hand-computed values: stage times from nested
profiler ranges, the headline ratios and targets, and when a memory row may run."""
import os
import sys
from types import SimpleNamespace

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from tools.benchmark.calibration import fits_in_memory  # noqa: E402
from tools.benchmark.stages import exclusive_stage_seconds, profiled_call  # noqa: E402
from tools.benchmark.summary import summarise  # noqa: E402


def _event(name, us, parent=None):
    return SimpleNamespace(name=name, cpu_parent=parent, time_range=SimpleNamespace(elapsed_us=lambda: us))


def test_nested_stages_are_exclusive():
    # select (100 us) holds an unlabelled op (30 us) that holds assemble (40 us); two backbone
    # ranges (one per test scale) add up; render holds a torchvision::nms op (5 us).
    select = _event("instancefcn.select", 100)
    op = _event("aten::index", 30, select)
    render = _event("instancefcn.render", 50)
    events = [_event("instancefcn.backbone", 200), _event("instancefcn.backbone", 300), select, op,
              _event("instancefcn.assemble", 40, op), render, _event("torchvision::nms", 5, render),
              _event("instancefcn.heads", 20)]
    st = exclusive_stage_seconds(events)
    expected = {"backbone": 500e-6, "heads": 20e-6, "assemble": 40e-6, "select": 60e-6, "render": 50e-6, "op:nms": 5e-6}
    assert st.keys() == expected.keys()
    for k, v in expected.items():
        assert st[k] == pytest.approx(v), k


def test_profiled_call_refuses_a_missing_label():
    # A model whose labels were renamed must not read as "render took 0 s".
    from torch.profiler import record_function

    def fake_inference():
        for s in ("backbone", "heads", "assemble", "select"):
            with record_function(f"instancefcn.{s}"):
                pass
        with record_function("instancefcn.paste"):
            return 7

    with pytest.raises(RuntimeError, match="instancefcn.render"):
        profiled_call(fake_inference)


def test_profiled_call_on_the_model(project_cfg):
    # The labels the benchmark reads are the ones the model carries.
    import torch
    from detectron2.modeling import build_model

    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",
                      ["MODEL.WEIGHTS", "", "MODEL.INSTANCEFCN.TEST_SCALES", [48, 64], "MODEL.INSTANCEFCN.TOPK_PER_SCALE", 20])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 48, 56), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        out, total, st = profiled_call(lambda: model([{"image": image}])[0]["instances"])
    assert len(out) > 0 and total > 0
    assert all(st[s] > 0 for s in ("backbone", "heads", "assemble", "render")) and st["select"] >= 0
    assert st["backbone"] + st["heads"] + st["assemble"] + st["select"] + st["render"] + st["other"] == pytest.approx(total)


def _row(total, **kw):
    return dict(total_s=total, **kw)


def test_summary_ratios_and_targets():
    from tools.benchmark.summary import pair_rows

    results = {
        "ifcn_800x1200_1000": _row(6.0, post_backbone_fraction=0.2, peak_rss_gb=3.0),
        "ifcn_480x640_5000": {"error": "exit 1"},
        "mem_bitmask_4000x3000_1000": {"skipped": "too big", "projected_peak_rss_gb": 12.5},
    }
    # Three interleaved repetitions: (model row, Mask R-CNN row) times per repetition.
    times = {("vgg16_fpn", 1000): [(2.0, 4.0), (3.0, 4.0), (2.0, 1.9)],  # ratios 0.5, 0.75, 1.05: one above 1
             ("r50_fpn", 1000): [(1.5, 3.0), (1.0, 4.0), (2.0, 4.0)],  # 0.5, 0.25, 0.5
             ("vgg16_fpn", 100): [(1.0, 2.0), (1.0, 2.0), (1.0, 2.0)]}
    fractions = {"vgg16_fpn": [0.1, 0.14, 0.2], "r50_fpn": [0.1, 0.12, 0.14]}
    for (model, dets), pairs in times.items():
        for rep, (ours, theirs) in enumerate(pairs):
            a, b = pair_rows(model, dets, False, rep)
            results[a] = _row(ours, post_backbone_fraction=fractions[model][rep] if dets == 1000 else 0.5)
            results[b] = _row(theirs)
    s = summarise(results, quick=False, gemm_flops_per_s=1e11)
    assert s["vs_mask_rcnn_r50_fpn"] == pytest.approx(0.75)  # the median, not one repetition
    assert s["spreads"]["vs_mask_rcnn_r50_fpn"]["min"] == pytest.approx(0.5)
    assert s["spreads"]["vs_mask_rcnn_r50_fpn"]["max"] == pytest.approx(2.0 / 1.9)
    # the pyramid's one row over the median Mask R-CNN time (at 1000) of the vgg16_fpn pairs
    assert s["vs_mask_rcnn_r50_fpn_by_model"] == pytest.approx(
        {"vgg16_pyramid": 1.5, "vgg16_fpn": 0.75, "r50_fpn": 0.5})
    assert s["post_backbone_fraction_5000"] is None  # a failed row gives no figure
    assert s["peak_rss_gb_4000x3000_1000_bitmask"] == 12.5 and s["peak_rss_gb_4000x3000_1000_bitmask_projected"]
    met = {t["target"]: t for t in s["targets"]}
    assert (met["`post_backbone_fraction_800x1200` <= 0.15"]["value"], met["`post_backbone_fraction_800x1200` <= 0.15"]["met"]) == (0.2, False)
    assert met["`peak_rss_gb_800x1200` <= 4.0"]["met"]
    # met only when the whole spread is inside the target: a median inside is not enough
    t = met["vgg16_fpn / Mask R-CNN R50-FPN (1000 detections) <= 1.0"]
    assert t["value"] == pytest.approx(0.75) and t["spread"][1] > 1.0 and not t["met"] and t["runs"] == 3
    assert met["r50_fpn / Mask R-CNN R50-FPN (1000 detections) <= 1.0"]["met"]
    assert not met["vgg16_fpn: after backbone <= 0.15 (config NMS, 1000 proposals)"]["met"]  # 0.2 in one run
    assert met["r50_fpn: after backbone <= 0.15 (config NMS, 1000 proposals)"]["met"]
    assert met["VGG16-FPN / VGG-16 pyramid time <= 0.5"]["value"] == pytest.approx(0.5)


def test_memory_rows_run_only_with_room():
    gib = 1024 ** 3
    assert fits_in_memory(10 * gib, 14 * gib)  # 10 x 1.25 + 1 = 13.5 GiB
    assert not fits_in_memory(10 * gib, 13 * gib)
    assert not fits_in_memory(1, None)  # unknown availability: never run blind


def test_repo_benchmarks_md_is_rendered_from_the_json():
    # BENCHMARKS.md is never edited by hand: it is what the report module makes of the JSON.
    import json

    from tools.benchmark import SCHEMA, report

    with open(os.path.join(REPO, "results", "benchmark.json")) as f:
        data = json.load(f)
    if data.get("schema") != SCHEMA:
        pytest.skip("results/benchmark.json predates the tools/benchmark package; regenerate it with "
                    "`python -m tools.benchmark --write-repo-results` on an idle machine")
    with open(os.path.join(REPO, "BENCHMARKS.md")) as f:
        assert f.read() == report.render(data, "results/benchmark.json")


@pytest.mark.parametrize("entry", [["-m", "tools.benchmark"], [os.path.join(REPO, "tools", "benchmark")]])
def test_both_entry_points_parse(entry, tmp_path):
    # `python -m tools.benchmark` from the repository, `python tools/benchmark` from anywhere.
    import subprocess

    cwd = REPO if entry[0] == "-m" else str(tmp_path)
    proc = subprocess.run([sys.executable, *entry, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--output-dir" in proc.stdout and "--write-repo-results" in proc.stdout
