"""Headline figures and targets from the rows of one run (pure functions of the results)."""
import math

# Headline key -> (row of a full run, row of a --quick run, field). A quick run fills the same
# keys from its tiny rows ("quick": true in the JSON; "headline_rows" says which row).
HEADLINES = {
    "post_backbone_fraction": ("ifcn_800x1200_1000", "ifcn_128x160_1000", "post_backbone_fraction"),
    "post_backbone_fraction_480x640": ("ifcn_480x640_1000", "ifcn_128x160_1000", "post_backbone_fraction"),
    "post_backbone_fraction_800x1200": ("ifcn_800x1200_1000", "ifcn_128x160_1000", "post_backbone_fraction"),
    "post_backbone_fraction_5000": ("ifcn_480x640_5000", None, "post_backbone_fraction"),
    "peak_rss_gb_800x1200": ("ifcn_800x1200_1000", "ifcn_128x160_1000", "peak_rss_gb"),
    "peak_cuda_gb_800x1200": ("ifcn_800x1200_1000", "ifcn_128x160_1000", "peak_cuda_gb"),
    "inference_s_480x640": ("ifcn_480x640_1000", "ifcn_128x160_1000", "total_s"),
    "inference_s_800x1200": ("ifcn_800x1200_1000", "ifcn_128x160_1000", "total_s"),
    "peak_rss_gb_4000x3000_1000_rle": ("mem_rle_4000x3000_1000", "mem_rle_256x320_100", "peak_rss_gb"),
}
# Ratio key -> ((our row, Mask R-CNN row) of a full run, the same of a quick run).
RATIOS = {
    "vs_mask_rcnn_r50_fpn": (("ifcn_800x1200_1000", "mask_rcnn_800x1200"), ("ifcn_128x160_1000", "mask_rcnn_128x160")),
    "vs_mask_rcnn_r50_fpn_480x640": (("ifcn_480x640_1000", "mask_rcnn_480x640"), (None, None)),
    "vs_mask_rcnn_r50_fpn_800x1200_100dets": (("ifcn_800x1200_1000", "mask_rcnn_800x1200_100dets"), (None, None)),
}
# vs_mask_rcnn_r50_fpn_by_model: each model's row at the comparison size.
BY_MODEL_SIZE = {False: "800x1200_1000", True: "128x160_1000"}
BITMASK_ROW = {False: "mem_bitmask_4000x3000_1000", True: "mem_bitmask_256x320_100"}

TARGET_POST_BACKBONE = 0.15
TARGET_PEAK_GB_800x1200 = 4.0
TARGET_PEAK_GB_RLE = 2.0
TARGET_R50_FPN_VS_MASK_RCNN = 1.0
TARGET_VGG16_FPN_VS_PYRAMID = 0.5


def ok(row):
    return isinstance(row, dict) and "error" not in row and "skipped" not in row


def by_model_row(model, quick):
    prefix = "ifcn_" if model == "vgg16_pyramid" else f"ifcn_{model}_"
    return prefix + BY_MODEL_SIZE[quick]


def _field(results, name, field):
    row = results.get(name) if name else None
    value = row.get(field) if ok(row) else None
    return None if isinstance(value, float) and math.isnan(value) else value


def _ratio(results, ours, theirs):
    a, b = _field(results, ours, "total_s"), _field(results, theirs, "total_s")
    return a / b if a is not None and b else None


def summarise(results, quick, gemm_flops_per_s):
    """Headline keys, ``headline_rows`` (key -> row it came from), ``flops`` and ``targets``."""
    s, rows = {}, {}
    for key, (full, small, field) in HEADLINES.items():
        name = small if quick else full
        s[key], rows[key] = _field(results, name, field), name
    for key, (full, small) in RATIOS.items():
        ours, theirs = small if quick else full
        s[key], rows[key] = _ratio(results, ours, theirs), ours and f"{ours} / {theirs}"
    mrcnn = RATIOS["vs_mask_rcnn_r50_fpn"][1 if quick else 0][1]
    s["vs_mask_rcnn_r50_fpn_by_model"] = {
        m: _ratio(results, by_model_row(m, quick), mrcnn) for m in ("vgg16_pyramid", "vgg16_fpn", "r50_fpn")}
    rows["vs_mask_rcnn_r50_fpn_by_model"] = {
        m: f"{by_model_row(m, quick)} / {mrcnn}" for m in s["vs_mask_rcnn_r50_fpn_by_model"]}

    bitmask = results.get(BITMASK_ROW[quick], {})
    s["peak_rss_gb_4000x3000_1000_bitmask"] = (
        bitmask.get("peak_rss_gb") if ok(bitmask) else bitmask.get("projected_peak_rss_gb"))
    s["peak_rss_gb_4000x3000_1000_bitmask_projected"] = not ok(bitmask) and "projected_peak_rss_gb" in bitmask
    rows["peak_rss_gb_4000x3000_1000_bitmask"] = BITMASK_ROW[quick]

    # FLOPs and achieved FLOP/s vs the GEMM peak, both as 2 x multiply-adds per second.
    s["flops"] = {}
    for name, r in results.items():
        if ok(r) and "flops" in r and r.get("backbone_heads_s"):
            f = 2 * r["flops"]["macs_total"]
            s["flops"][name] = {"gflops_forward": f / 1e9, "gflops_backbone": 2 * r["flops"]["macs_backbone"] / 1e9,
                                "backbone_heads_s": r["backbone_heads_s"],
                                "achieved_gflops_per_s": f / r["backbone_heads_s"] / 1e9,
                                "vs_gemm_peak": f / r["backbone_heads_s"] / gemm_flops_per_s}
    head = s["flops"].get(HEADLINES["post_backbone_fraction"][1 if quick else 0])
    s["flops_per_s_vs_gemm_peak"] = head["vs_gemm_peak"] if head else None
    s["gemm_peak_gflops_per_s"] = gemm_flops_per_s / 1e9
    s["headline_rows"] = rows
    s["targets"] = targets(s, results)
    return s


def targets(s, results):
    """Targets of issues 11 and 12, reported (not asserted): ``[{target, value, met}]``."""
    out = []

    def add(text, value, met):
        if value is not None:
            out.append({"target": text, "value": value, "met": bool(met(value))})

    for key in ("post_backbone_fraction_480x640", "post_backbone_fraction_800x1200", "post_backbone_fraction_5000"):
        add(f"`{key}` <= {TARGET_POST_BACKBONE}", s[key], lambda v: v <= TARGET_POST_BACKBONE)
    add(f"`peak_rss_gb_800x1200` <= {TARGET_PEAK_GB_800x1200}", s["peak_rss_gb_800x1200"],
        lambda v: v <= TARGET_PEAK_GB_800x1200)
    add(f"`peak_rss_gb_4000x3000_1000_rle` <= {TARGET_PEAK_GB_RLE}", s["peak_rss_gb_4000x3000_1000_rle"],
        lambda v: v <= TARGET_PEAK_GB_RLE)
    by_model = s["vs_mask_rcnn_r50_fpn_by_model"]
    add(f"R50-FPN / Mask R-CNN R50-FPN <= {TARGET_R50_FPN_VS_MASK_RCNN}", by_model["r50_fpn"],
        lambda v: v <= TARGET_R50_FPN_VS_MASK_RCNN)
    if by_model["vgg16_fpn"] is not None and by_model["vgg16_pyramid"]:
        add(f"VGG16-FPN / VGG-16 pyramid time <= {TARGET_VGG16_FPN_VS_PYRAMID}",
            by_model["vgg16_fpn"] / by_model["vgg16_pyramid"], lambda v: v <= TARGET_VGG16_FPN_VS_PYRAMID)
    # Top-K only: no level of any scale hands more than TOPK_PER_SCALE windows to rendering.
    worst = [max(r["selected_windows_per_level"]) / (r["topk_per_scale"] * len(r["test_scales"]))
             for r in results.values() if ok(r) and "selected_windows_per_level" in r]
    add("windows selected per level / (TOPK_PER_SCALE x test scales), max over rows (<= 1: top-K only)",
        max(worst) if worst else None, lambda v: v <= 1)
    return out
