"""Config keys of InstanceFCN. Defaults are the paper's (Dai et al., ECCV 2016)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_instancefcn_config"]

# Caffe/Keras ImageNet VGG-16 input convention: BGR, 0-255, mean-subtracted, std 1.
VGG_CAFFE_PIXEL_MEAN = [103.939, 116.779, 123.68]


def add_instancefcn_config(cfg):
    """Add the MODEL.VGG and MODEL.INSTANCEFCN nodes (and our INPUT extras) to ``cfg``."""
    _C = cfg

    _C.MODEL.VGG = CN()
    _C.MODEL.VGG.DEPTH = 16  # only VGG-16 (13 conv layers, no fc) is implemented
    _C.MODEL.VGG.OUT_FEATURES = ["conv5"]  # any of conv1..conv5 (outputs of each conv block)
    _C.MODEL.VGG.CONV5_DILATION = 2  # 2: pool4 stride 1 + dilated conv5 -> stride 8; 1: plain VGG, stride 16
    _C.MODEL.VGG.NORM = ""  # "" (as ImageNet VGG-16), or BN / SyncBN / FrozenBN / GN after each conv

    _C.MODEL.INSTANCEFCN = CN()
    _C.MODEL.INSTANCEFCN.IN_FEATURES = ["conv5"]  # backbone levels the shared branches read (one, or a feature pyramid)
    _C.MODEL.INSTANCEFCN.K = 5  # k: the k x k grid of relative positions (k^2 score maps)
    _C.MODEL.INSTANCEFCN.WINDOW_SIZE = 21  # m: sliding-window side, in feature cells (21 x 8 = 168 px)
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
    _C.MODEL.INSTANCEFCN.TOPK_PER_SCALE = 1000  # windows assembled per scale, ranked by objectness
    _C.MODEL.INSTANCEFCN.MASK_THRESHOLD = 0.5  # binarise pasted mask probabilities at this value
    _C.MODEL.INSTANCEFCN.MASK_FORMAT = "bitmask"  # "bitmask": pred_masks (N, H, W); "rle": pred_masks_rle; "roi": (N, 1, m, m) + boxes (docs/mask_formats.md)
    _C.MODEL.INSTANCEFCN.NMS_THRESH = 0.8  # box IoU for NMS on the masks' tight boxes, across scales

    # Paper's training scales: shorter side 600 x 1.5^{-4..1}, sampled per image.
    _C.INPUT.MIN_SIZE_TRAIN = (119, 178, 267, 400, 600, 900)
    _C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    _C.INPUT.MAX_SIZE_TRAIN = 1500
    # The model builds its own test pyramid (TEST_SCALES) from the original image.
    _C.INPUT.MIN_SIZE_TEST = 0
    _C.MODEL.PIXEL_MEAN = list(VGG_CAFFE_PIXEL_MEAN)
    _C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]
