"""Config keys of InstanceFCN (defaults are the paper's, Dai et al., ECCV 2016) and the one
function that builds a project config from a YAML file and command-line overrides.

``add_instancefcn_config`` only adds keys; values of Detectron2's own keys that a model needs
(input sizes, pixel mean/std, ...) live in its YAML (configs/Base-InstanceFCN-*.yaml).
"""
import difflib
import os

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_instancefcn_config", "get_project_cfg", "merge_config"]

def add_instancefcn_config(cfg):
    """Add the MODEL.VGG and MODEL.INSTANCEFCN nodes to ``cfg``."""
    _C = cfg

    _C.MODEL.VGG = CN()
    _C.MODEL.VGG.OUT_FEATURES = ["conv5"]  # any of conv1..conv5 (outputs of each conv block)
    _C.MODEL.VGG.CONV5_DILATION = 2  # 2: pool4 stride 1 + dilated conv5 -> stride 8; 1: plain VGG, stride 16
    _C.MODEL.VGG.NORM = ""  # "" (as ImageNet VGG-16), or BN / SyncBN / FrozenBN / GN after each conv

    _C.MODEL.INSTANCEFCN = CN()
    _C.MODEL.INSTANCEFCN.IN_FEATURES = ["conv5"]  # backbone levels the shared branches read (one, or a feature pyramid)
    _C.MODEL.INSTANCEFCN.K = 5  # k: the k x k grid of relative positions (k^2 score maps)
    _C.MODEL.INSTANCEFCN.WINDOW_SIZE = 21  # m: sliding-window side, in feature cells (odd; 21 x 8 = 168 px)
    _C.MODEL.INSTANCEFCN.INSTANCE_CHANNELS = 512  # width of the instance branch's 1x1 conv
    _C.MODEL.INSTANCEFCN.OBJECTNESS_CHANNELS = 512  # width of the objectness branch's 3x3 conv
    # --- training windows (DeepMask-style rule; offsets are fractions of the window side) ---
    _C.MODEL.INSTANCEFCN.CANONICAL_OBJECT_RATIO = 128.0 / 224.0  # object's longer side / window side for a perfect fit (DeepMask)
    _C.MODEL.INSTANCEFCN.POSITIVE_CENTER_OFFSET = 16.0 / 224.0  # positive: box centre within this of the window centre (each axis)
    _C.MODEL.INSTANCEFCN.NEGATIVE_CENTER_OFFSET = 32.0 / 224.0  # negative: every object's centre farther than this ...
    _C.MODEL.INSTANCEFCN.POSITIVE_SCALE_LOG2 = 0.25  # positive: |log2(size / canonical)| <= this (2^+-1/4)
    _C.MODEL.INSTANCEFCN.NEGATIVE_SCALE_LOG2 = 1.0  # ... or its |log2(size / canonical)| > this; other windows are ignored
    _C.MODEL.INSTANCEFCN.BATCH_SIZE_PER_IMAGE = 256  # windows sampled per image
    _C.MODEL.INSTANCEFCN.POSITIVE_FRACTION = 0.5  # 1:1; missing positives are filled with negatives
    _C.MODEL.INSTANCEFCN.OBJECTNESS_LOSS_WEIGHT = 1.0  # paper: no extra weight between the terms
    _C.MODEL.INSTANCEFCN.MASK_LOSS_WEIGHT = 1.0  # paper: no extra weight between the terms
    _C.MODEL.INSTANCEFCN.MASK_LOSS_NORMALIZATION = "window"  # "window": the paper's sum over a window's pixels; "pixel": mean over pixels (losses.py)
    # --- inference ---
    _C.MODEL.INSTANCEFCN.TEST_SCALES = [119, 178, 267, 400, 600, 900]  # pyramid of shorter sides (the training scales)
    _C.MODEL.INSTANCEFCN.TEST_MAX_SIZE = 1500  # cap on the longer side of every pyramid level
    _C.MODEL.INSTANCEFCN.TOPK_PER_SCALE = 1000  # windows assembled per level per test scale, ranked by objectness
    _C.MODEL.INSTANCEFCN.MASK_THRESHOLD = 0.5  # binarise pasted mask probabilities at this value
    _C.MODEL.INSTANCEFCN.MASK_FORMAT = "bitmask"  # "bitmask": pred_masks (N, H, W); "rle": pred_masks_rle; "roi": (N, 1, m, m) + boxes (docs/mask_formats.md)
    _C.MODEL.INSTANCEFCN.NMS_THRESH = 0.8  # IoU above which NMS suppresses (box IoU for NMS_TYPE "box" / "box_matrix", mask IoU for "mask")
    _C.MODEL.INSTANCEFCN.NMS_TYPE = "box"  # "box": NMS on the masks' tight boxes (paper); "mask": greedy mask-IoU NMS; "matrix": SOLOv2 Matrix NMS; "box_matrix": box NMS, then Matrix NMS re-ranks the kept (suppression.py)
    _C.MODEL.INSTANCEFCN.SCORE = "objectness"  # ranking: "objectness" (paper) or "objectness_maskness" (x mean foreground probability in the mask, SOLO)
    _C.MODEL.INSTANCEFCN.MATRIX_NMS_KERNEL = "gaussian"  # Matrix NMS decay f(iou): "linear" 1 - iou or "gaussian" exp(-sigma iou^2)
    _C.MODEL.INSTANCEFCN.MATRIX_NMS_SIGMA = 2.0  # sigma of the gaussian kernel (SOLOv2's value)
    _C.MODEL.INSTANCEFCN.MATRIX_NMS_SCORE_THRESH = 0.0  # Matrix NMS drops proposals whose decayed score is below this (0: none)
    _C.MODEL.INSTANCEFCN.NMS_PER_LEVEL_FIRST = False  # NMS within each test scale's level, then across: cheaper at thousands of windows

    _C.INPUT.CROP.AROUND_OBJECT = False  # training crop holds a random object, whole where it fits (data/object_crop.py): sparse images
    # --- open-world proposals (train on some categories, score AR on the others) ---
    _C.DATASETS.TRAIN_CATEGORY_IDS = []  # dataset category ids (as in the COCO JSON) to train on; [] = all
    _C.DATASETS.TRAIN_UNSEEN_AS = "background"  # other categories: "background" (annotations dropped, as OLN) or "ignore" (ignore regions)
    _C.TEST.PROPOSAL_EVAL_CATEGORY_IDS = []  # score AR on these dataset category ids only, other GT ignored; [] = all
    _C.TEST.PROPOSAL_BUDGET_RULE = "oln"  # "oln": top N cut first; "exclude_seen": drop proposals on other-category GT first

def get_project_cfg(config_file: str = "", opts=()):
    """Detectron2's defaults + InstanceFCN's keys + ``config_file`` + ``opts`` (KEY VALUE list),
    unfrozen; an unknown key raises with the closest known names."""
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    return merge_config(cfg, config_file, opts)


def _all_keys(cfg, prefix=""):
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        yield full
        if hasattr(v, "items"):
            yield from _all_keys(v, full + ".")


def merge_config(cfg, config_file: str = "", opts=()):
    """``merge_from_file`` + ``merge_from_list`` with close-match hints for unknown keys."""
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file not found: {config_file!r}")
    where = f" in {config_file!r} (or a _BASE_ file it includes)"
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        where = " in the command-line overrides"
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as e:
        msg = str(e.args[0]) if e.args else str(e)
        # yacs raises KeyError for an unknown key in a file but AssertionError
        # ("Non-existent key: ...") for one in the command-line opts.
        if isinstance(e, AssertionError) and not msg.startswith("Non-existent"):
            raise
        bad = msg.split(":")[-1].strip().strip("'\"")
        hints = difflib.get_close_matches(bad, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(hints)}?" if hints else ""
        raise KeyError(f"{msg}{where}.{hint} (config keys: instancefcn_d2/config.py)") from None
    return cfg
