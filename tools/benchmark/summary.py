"""Headline figures and targets from the rows of one run (pure functions of the results)."""
import math
import statistics

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
# Ratio key -> (model, proposals = Mask R-CNN detections, SCORE_THRESH_TEST 0): the model's time
# over that of the Mask R-CNN row run right after it, once per repetition (--pairs), reported as
# the median and the spread [min, max] of the per-repetition ratios. vgg16_fpn is the main model.
PAIRS = {
    "vs_mask_rcnn_r50_fpn": ("vgg16_fpn", 1000),
    "vs_mask_rcnn_r50_fpn_r50_fpn": ("r50_fpn", 1000),
    "vs_mask_rcnn_r50_fpn_100dets": ("vgg16_fpn", 100),
}
PAIR_SIZE = {False: "800x1200", True: "128x160"}
PYRAMID_ROW = {False: "ifcn_800x1200_1000", True: "ifcn_128x160_1000"}
BITMASK_ROW = {False: "mem_bitmask_4000x3000_1000", True: "mem_bitmask_256x320_100"}
PAIR_MODELS_TARGETED = ("vgg16_fpn", "r50_fpn")  # the models people run: post-backbone and speed targets

TARGET_POST_BACKBONE = 0.15
TARGET_PEAK_GB_800x1200 = 4.0
TARGET_PEAK_GB_RLE = 2.0
TARGET_VS_MASK_RCNN = 1.0
TARGET_VGG16_FPN_VS_PYRAMID = 0.5


def ok(row):
    return isinstance(row, dict) and "error" not in row and "skipped" not in row


def pair_detections(dets, quick):
    """Proposals (= Mask R-CNN detections) of a pair: a --quick run asks 1/50 of them (Mask
    R-CNN's mask head on 1000 boxes alone is a minute on a busy 2-core CPU)."""
    return max(1, dets // 50) if quick else dets


def pair_rows(model, dets, quick, rep):
    """Names of repetition ``rep``'s (InstanceFCN row, Mask R-CNN row) for ``model`` at ``dets``."""
    size, dets = PAIR_SIZE[quick], pair_detections(dets, quick)
    return f"ifcn_{model}_{size}_{dets}_r{rep}", f"mask_rcnn_{size}_{dets}dets_after_{model}_r{rep}"


def repetitions(results, model, dets, quick):
    """``[(ours, theirs), ...]`` row names of every repetition present in ``results``."""
    out, rep = [], 0
    while pair_rows(model, dets, quick, rep)[0] in results:
        out.append(pair_rows(model, dets, quick, rep))
        rep += 1
    return out


def spread(values):
    """``{"median", "min", "max", "runs"}`` of the defined values; None when there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": float(statistics.median(values)), "min": min(values), "max": max(values), "runs": values}


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
    s["spreads"] = {}
    for key, (model, dets) in PAIRS.items():
        reps = repetitions(results, model, dets, quick)
        s["spreads"][key] = spread([_ratio(results, ours, theirs) for ours, theirs in reps])
        s[key] = s["spreads"][key]["median"] if s["spreads"][key] else None
        rows[key] = (f"median over {len(reps)} pair(s) {model} / Mask R-CNN at {pair_detections(dets, quick)}"
                     if reps else None)
    for model in PAIR_MODELS_TARGETED:
        reps = repetitions(results, model, 1000, quick)
        s["spreads"][f"post_backbone_fraction_{model}"] = spread(
            [_field(results, ours, "post_backbone_fraction") for ours, _ in reps])
    # The pyramid model has one row: over the median time of the Mask R-CNN rows at 1000.
    mrcnn = spread([_field(results, theirs, "total_s") for _, theirs in repetitions(results, "vgg16_fpn", 1000, quick)])
    pyramid = _field(results, PYRAMID_ROW[quick], "total_s")
    s["vs_mask_rcnn_r50_fpn_by_model"] = {
        "vgg16_pyramid": pyramid / mrcnn["median"] if pyramid is not None and mrcnn else None,
        "vgg16_fpn": s["vs_mask_rcnn_r50_fpn"], "r50_fpn": s["vs_mask_rcnn_r50_fpn_r50_fpn"]}
    rows["vs_mask_rcnn_r50_fpn_by_model"] = {
        "vgg16_pyramid": f"{PYRAMID_ROW[quick]} / median of the Mask R-CNN rows at 1000",
        "vgg16_fpn": "pairs (median)", "r50_fpn": "pairs (median)"}

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
    s["targets"] = targets(s, results, quick)
    return s


def targets(s, results, quick=False):
    """Targets of issues 11 and 12, reported (not asserted): ``[{target, value, met}]``."""
    out = []

    def add(text, value, met, spread_=None):
        """A target with a spread is met only when every repetition meets it (the whole spread)."""
        if spread_:
            out.append({"target": text, "value": spread_["median"], "spread": [spread_["min"], spread_["max"]],
                        "runs": len(spread_["runs"]), "met": all(bool(met(v)) for v in spread_["runs"])})
        elif value is not None:
            out.append({"target": text, "value": value, "met": bool(met(value))})

    for key in ("post_backbone_fraction_480x640", "post_backbone_fraction_800x1200", "post_backbone_fraction_5000"):
        add(f"`{key}` <= {TARGET_POST_BACKBONE}", s[key], lambda v: v <= TARGET_POST_BACKBONE)
    for model in PAIR_MODELS_TARGETED:
        add(f"{model}: after backbone <= {TARGET_POST_BACKBONE} (config NMS, 1000 proposals)", None,
            lambda v: v <= TARGET_POST_BACKBONE, s["spreads"][f"post_backbone_fraction_{model}"])
    for key, (model, dets) in PAIRS.items():
        add(f"{model} / Mask R-CNN R50-FPN ({pair_detections(dets, quick)} detections) <= {TARGET_VS_MASK_RCNN}", None,
            lambda v: v <= TARGET_VS_MASK_RCNN, s["spreads"][key])
    add(f"`peak_rss_gb_800x1200` <= {TARGET_PEAK_GB_800x1200}", s["peak_rss_gb_800x1200"],
        lambda v: v <= TARGET_PEAK_GB_800x1200)
    add(f"`peak_rss_gb_4000x3000_1000_rle` <= {TARGET_PEAK_GB_RLE}", s["peak_rss_gb_4000x3000_1000_rle"],
        lambda v: v <= TARGET_PEAK_GB_RLE)
    by_model = s["vs_mask_rcnn_r50_fpn_by_model"]
    if by_model["vgg16_fpn"] is not None and by_model["vgg16_pyramid"]:
        add(f"VGG16-FPN / VGG-16 pyramid time <= {TARGET_VGG16_FPN_VS_PYRAMID}",
            by_model["vgg16_fpn"] / by_model["vgg16_pyramid"], lambda v: v <= TARGET_VGG16_FPN_VS_PYRAMID)
    # Top-K only: no level of any scale hands more than TOPK_PER_SCALE windows to rendering.
    worst = [max(r["selected_windows_per_level"]) / (r["topk_per_scale"] * len(r["test_scales"]))
             for r in results.values() if ok(r) and "selected_windows_per_level" in r]
    add("windows selected per level / (TOPK_PER_SCALE x test scales), max over rows (<= 1: top-K only)",
        max(worst) if worst else None, lambda v: v <= 1)
    return out
