"""``python -m tools.benchmark --quick``: every kind of row on tiny images, end to end.

Checks the outputs' shape, not the timings: the headline keys are finite, each row ran (or was
skipped for a stated reason), and BENCHMARKS.md is exactly what the report module renders from
the JSON (no figure in it typed by hand)."""
import json
import math
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

HEADLINE_KEYS = ("post_backbone_fraction", "post_backbone_fraction_480x640", "peak_rss_gb_800x1200",
                 "vs_mask_rcnn_r50_fpn", "flops_per_s_vs_gemm_peak", "gemm_peak_gflops_per_s")
STAGES = {"backbone", "heads", "assemble", "select", "render", "op:nms", "other"}


def _finite_positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_benchmark_quick(tmp_path, project_cfg):
    from tools.benchmark import cli, report

    # The command's main in this process (its memory row still runs in a fresh one);
    # --memory-limit-gb 0: the bitmask memory row takes its projection path instead of a process.
    rc = cli.main(["--quick", "--device", "cpu", "--memory-limit-gb", "0", "--output-dir", str(tmp_path)])
    assert rc == 0
    assert not (tmp_path / "results").exists()  # nothing but the two files of --output-dir
    data = json.loads((tmp_path / "benchmark.json").read_text())
    md = (tmp_path / "BENCHMARKS.md").read_text()
    assert md == report.render(data, "benchmark.json")

    assert data["schema"] == 2 and data["device"] == "cpu" and data["quick"] is True and data["complete"]
    m = data["machine"]
    assert m["logical_cores"] >= 1 and m["cpu_model"] and isinstance(m["idle"], bool)
    assert len(m["load_average_at_start"]) == 3 and m["torch_version"]
    for key in HEADLINE_KEYS:
        assert _finite_positive(data[key]), (key, data[key])
    assert 0 < data["post_backbone_fraction"] < 1
    results = data["results"]
    # --quick: one process for all rows but the memory ones, whose peak RSS must be their own.
    ran = {n: r for n, r in results.items() if "skipped" not in r}
    assert {n for n, r in ran.items() if not r.get("in_process")} == {n for n in ran if n.startswith("mem_")}
    assert "the rows in the benchmark's own process except the memory rows" in md
    # Each model's ratio is its own row's time over Mask R-CNN's, from the same run.
    rows = {"vgg16_pyramid": "ifcn_128x160_1000", "vgg16_fpn": "ifcn_vgg16_fpn_128x160_1000",
            "r50_fpn": "ifcn_r50_fpn_128x160_1000"}
    by_model = data["vs_mask_rcnn_r50_fpn_by_model"]
    assert set(by_model) == set(rows)
    for model, name in rows.items():
        assert results[name]["model"] == model
        assert by_model[model] == results[name]["total_s"] / results["mask_rcnn_128x160"]["total_s"], model
    for name in ("ifcn_128x160_1000", "ifcn_vgg16_fpn_128x160_1000", "ifcn_r50_fpn_128x160_1000"):
        row = results[name]
        assert set(row["stages_s"]) == STAGES and row["stages_s"]["backbone"] > 0 and row["stages_s"]["render"] > 0
        # The stages and "other" partition the profiled run.
        assert math.isclose(sum(row["stages_s"].values()) - row["stages_s"]["op:nms"], row["profiled_total_s"],
                            rel_tol=1e-6)
        assert 0 < row["proposals_out"] <= 1000
        # Top-K only: no level of a scale hands more than TOPK_PER_SCALE windows to rendering.
        assert max(row["selected_windows_per_level"]) <= row["topk_per_scale"] * len(row["test_scales"])
        assert row["flops"]["macs_total"] > row["flops"]["macs_backbone"] > 0
    assert results["ifcn_r50_fpn_128x160_1000"]["strides"] == [4, 8, 16, 32, 64]
    assert results["mask_rcnn_128x160"]["total_s"] > 0 and results["train_quickstart_160x160"]["iter_s"] > 0

    bitmask = results["mem_bitmask_256x320_100"]
    assert bitmask["projected_peak_rss_gb"] > 100 * 256 * 320 / 1024 ** 3
    assert data["peak_rss_gb_4000x3000_1000_bitmask_projected"] is True
    rle = results["mem_rle_256x320_100"]
    if "MASK_FORMAT" in project_cfg("configs/Base-InstanceFCN-VGG16.yaml").MODEL.INSTANCEFCN:
        assert rle["peak_rss_gb"] > 0 and _finite_positive(data["peak_rss_gb_4000x3000_1000_rle"])
    else:
        assert "MASK_FORMAT" in rle["skipped"] and data["peak_rss_gb_4000x3000_1000_rle"] is None
        assert "mem_rle_256x320_100`: skipped: MODEL.INSTANCEFCN.MASK_FORMAT" in md
