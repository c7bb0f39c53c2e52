"""Detectron2's Mask R-CNN R50-FPN (model zoo config, random weights) on the benchmark image,
as ``DefaultPredictor`` runs it (resize to the test size, outputs in the original frame)."""
from tools.benchmark import MASK_RCNN_CONFIG
from tools.benchmark.stages import autocast, timed_call
from tools.benchmark.measures import gpu_peak, median, peak_rss_gib, rand_image

__all__ = ["calibrate_frozen_bn", "infer_mask_rcnn"]


def calibrate_frozen_bn(model, inputs):
    """Data-dependent init of a random ResNet: every FrozenBatchNorm2d takes the statistics of
    its own input on ``inputs`` (one forward, layer by layer), so activations stay O(1) through
    the 50 layers as in a trained network. Without it they reach ~1e4, the RPN's box deltas
    explode and only a couple of proposals survive, so the ROI heads would run on ~2 boxes
    instead of 1000 and the timing would miss most of their cost."""
    import torch
    from detectron2.layers import FrozenBatchNorm2d

    def pre(mod, inp):
        x = inp[0].float()
        mod.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        mod.running_var.copy_(x.var(dim=(0, 2, 3)))

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hd in handles:
            hd.remove()


def infer_mask_rcnn(spec):
    import torch
    import torch.nn.functional as F

    import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims: model_zoo's pkg_resources)
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    device, amp = spec["device"], spec.get("amp")
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(MASK_RCNN_CONFIG))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = device, ""
    if spec.get("min_size_test"):
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = spec["min_size_test"], spec["max_size_test"]
    if spec.get("score_thresh") is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = spec["score_thresh"]
    if spec.get("detections"):  # with SCORE_THRESH_TEST 0 every one of them is kept, masks and all
        cfg.TEST.DETECTIONS_PER_IMAGE = spec["detections"]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = spec["size"]
    image = rand_image(h, w, spec.get("seed", 0))
    # ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) as DefaultPredictor; the resize is timed,
    # as InstanceFCN's own resizing to its test scales is.
    scale = min(cfg.INPUT.MIN_SIZE_TEST / min(h, w), cfg.INPUT.MAX_SIZE_TEST / max(h, w))
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)

    def resized():
        return F.interpolate(image.to(device, torch.float32)[None], size=(nh, nw), mode="bilinear",
                             align_corners=False)[0]

    calibrate = spec.get("calibrate_bn", True)
    if calibrate:
        calibrate_frozen_bn(model, [{"image": resized(), "height": h, "width": w}])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run():
        with torch.no_grad(), autocast(device, amp):
            return len(model([{"image": resized(), "height": h, "width": w}])[0]["instances"])

    n_proposals = []  # RPN proposals reaching the ROI heads (a forward hook: nothing is patched)
    model.proposal_generator.register_forward_hook(lambda _m, _i, out: n_proposals.append(len(out[0][0])))
    for _ in range(spec["warmup"]):
        run()
    runs = [timed_call(run, device) for _ in range(spec["repeats"])]
    return {
        "size": [h, w], "resized_to": [nh, nw], "score_thresh_test": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE, "warmup_runs": spec["warmup"],
        "detections_out": runs[-1][0], "frozen_bn_calibrated": bool(calibrate),
        "rpn_proposals_out": n_proposals[-1] if n_proposals else None,
        "total_s": median([t for _, t in runs]), "total_s_runs": [t for _, t in runs],
        "peak_rss_gb": peak_rss_gib(), "amp": amp or "none",
        **gpu_peak(device),
    }
