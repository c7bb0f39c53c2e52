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
    # Each model's ratio is its own row's time over that of the Mask R-CNN row run right after it;
    # the pyramid's single row is over the median of those Mask R-CNN rows (one here).
    from tools.benchmark.summary import pair_rows

    vgg, mr_vgg = pair_rows("vgg16_fpn", 1000, True, 0)
    r50, mr_r50 = pair_rows("r50_fpn", 1000, True, 0)
    by_model = data["vs_mask_rcnn_r50_fpn_by_model"]
    assert by_model["vgg16_fpn"] == results[vgg]["total_s"] / results[mr_vgg]["total_s"]
    assert by_model["r50_fpn"] == results[r50]["total_s"] / results[mr_r50]["total_s"]
    assert by_model["vgg16_pyramid"] == results["ifcn_128x160_1000"]["total_s"] / results[mr_vgg]["total_s"]
    assert data["pairs"] == 1 and data["spreads"]["vs_mask_rcnn_r50_fpn"]["runs"] == [by_model["vgg16_fpn"]]
    assert data["gemm_peak_after"]["flops_per_s"] > 0
    for name in (mr_vgg, mr_r50):  # SCORE_THRESH_TEST 0: every detection asked for is kept
        assert results[name]["score_thresh_test"] == 0.0
        assert results[name]["detections_out"] == results[name]["detections_per_image"] == results[vgg]["detections_per_image"]
    for name in ("ifcn_128x160_1000", vgg, r50, mr_vgg):
        assert results[name]["warmup_runs"] == data["warmup"]  # the same warm-up for every row
    for name, config in ((vgg, "configs/InstanceFCN-VGG16-FPN-COCO.yaml"), (r50, "configs/InstanceFCN-R50-FPN-COCO.yaml")):
        assert results[name]["nms_thresh"] == project_cfg(config).MODEL.INSTANCEFCN.NMS_THRESH < 1.0
    for name in ("ifcn_128x160_1000", vgg, r50):
        row = results[name]
        assert set(row["stages_s"]) == STAGES and row["stages_s"]["backbone"] > 0 and row["stages_s"]["render"] > 0
        # The stages and "other" partition the profiled run.
        assert math.isclose(sum(row["stages_s"].values()) - row["stages_s"]["op:nms"], row["profiled_total_s"],
                            rel_tol=1e-6)
        assert 0 < row["proposals_out"] <= row["detections_per_image"]
        # Top-K only: no level of a scale hands more than TOPK_PER_SCALE windows to rendering.
        assert max(row["selected_windows_per_level"]) <= row["topk_per_scale"] * len(row["test_scales"])
        assert row["flops"]["macs_total"] > row["flops"]["macs_backbone"] > 0
    assert results[r50]["strides"] == [4, 8, 16, 32, 64]
    assert results["train_quickstart_160x160"]["iter_s"] > 0

    bitmask = results["mem_bitmask_256x320_100"]
    assert bitmask["projected_peak_rss_gb"] > 100 * 256 * 320 / 1024 ** 3
    assert data["peak_rss_gb_4000x3000_1000_bitmask_projected"] is True
    rle = results["mem_rle_256x320_100"]
    if "MASK_FORMAT" in project_cfg("configs/Base-InstanceFCN-VGG16.yaml").MODEL.INSTANCEFCN:
        assert rle["peak_rss_gb"] > 0 and _finite_positive(data["peak_rss_gb_4000x3000_1000_rle"])
    else:
        assert "MASK_FORMAT" in rle["skipped"] and data["peak_rss_gb_4000x3000_1000_rle"] is None
        assert "mem_rle_256x320_100`: skipped: MODEL.INSTANCEFCN.MASK_FORMAT" in md
