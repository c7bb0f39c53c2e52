"""Scale coverage: which object sizes the sliding windows can learn (training) and propose (test).

A window of ``m`` cells on a level of stride ``s`` spans ``S = m * s`` input pixels; it is a
positive for an object whose longer box side, after the image is resized, lies within
``2^(+-band)`` of the canonical size ``C = ratio * S`` (:mod:`.targets`). An object is
therefore *learnable* when some training scale (and level) resizes it into that band, and
*proposable* when some test scale does. (The centre condition of the rule needs no scale: a
window centre lies within half a stride of any object centre, well inside the positive offset.)

Training inputs are made as detectron2's ``DatasetMapper`` makes them: ``INPUT.CROP`` (when
enabled) cuts the *original* image first, then ``ResizeShortestEdge`` brings the crop's shorter
side to the sampled scale with the longer side capped at ``MAX_SIZE_TRAIN``. A crop therefore
sets the resize factor (``scale / crop side``) and bounds the input size; an object counts only
if its box fits in the crop (a cut object is a different, truncated target). Test inputs are
the model's own pyramid of the whole image (``TEST_SCALES``, ``TEST_MAX_SIZE``).

Everything is vectorised over objects (numpy); :func:`scale_setup_from_config` reads a config.
"""
import logging
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np

from detectron2.structures import BoxMode

__all__ = [
    "ObjectSizes",
    "ScaleSetup",
    "in_features",
    "level_strides",
    "scale_setup_from_config",
    "resized_hw",
    "train_coverage",
    "test_coverage",
    "in_band",
    "coverage_summary",
    "check_scale_coverage",
]

logger = logging.getLogger(__name__)

WARN_BELOW = 0.90  # check_scale_coverage warns under this fraction
WARN_TOO_SMALL = 0.01  # ... and when this fraction of objects is under the smallest positive size


@dataclass(frozen=True)
class ObjectSizes:
    """Boxes of the (non-crowd) objects of a dataset, in original image pixels.

    ``box_wh``: ``(N, 2)`` box width, height; ``image_hw``: ``(N, 2)`` height, width of each
    object's image.
    """

    box_wh: np.ndarray
    image_hw: np.ndarray
    image_index: Optional[np.ndarray] = None  # (N,) which image each object is in, when known
    box_center: Optional[np.ndarray] = None  # (N, 2) x, y of each box centre, when known

    def objects_per_image(self) -> np.ndarray:
        """``(I,)`` number of objects in each image that has any (``image_index`` needed)."""
        if self.image_index is None:
            raise ValueError("ObjectSizes without image_index: objects per image unknown")
        counts = np.bincount(self.image_index) if len(self.image_index) else np.zeros(0, np.int64)
        return counts[counts > 0]

    @property
    def longer_side(self) -> np.ndarray:
        """``(N,)`` longer box side."""
        return self.box_wh.max(axis=1)

    def __len__(self):
        return len(self.box_wh)

    @classmethod
    def from_dataset_dicts(cls, dicts):
        """Non-crowd boxes of detectron2 dataset dicts (any ``bbox_mode``); empty boxes skipped."""
        wh, hw, index, center = [], [], [], []
        for i, d in enumerate(dicts):
            for a in d.get("annotations", ()):
                if a.get("iscrowd", 0) or "bbox" not in a:
                    continue
                x0, y0, x1, y1 = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
                if x1 > x0 and y1 > y0:
                    wh.append((x1 - x0, y1 - y0))
                    hw.append((d["height"], d["width"]))
                    index.append(i)
                    center.append(((x0 + x1) / 2, (y0 + y1) / 2))
        return cls(np.asarray(wh, np.float64).reshape(-1, 2), np.asarray(hw, np.int64).reshape(-1, 2),
                   np.asarray(index, np.int64), np.asarray(center, np.float64).reshape(-1, 2))


@dataclass(frozen=True)
class ScaleSetup:
    """The config values that decide which object sizes are positives (see module doc)."""

    train_scales: Tuple[int, ...]  # INPUT.MIN_SIZE_TRAIN
    train_max_size: int  # INPUT.MAX_SIZE_TRAIN
    test_scales: Tuple[int, ...]  # MODEL.INSTANCEFCN.TEST_SCALES
    test_max_size: int  # MODEL.INSTANCEFCN.TEST_MAX_SIZE
    strides: Tuple[int, ...]  # one per level of IN_FEATURES
    window_size: int = 21
    canonical_ratio: float = 128.0 / 224.0
    band_log2: float = 0.25
    sampling: str = "choice"  # INPUT.MIN_SIZE_TRAIN_SAMPLING: "choice" or "range"
    crop: Optional[Tuple[str, Tuple[float, float]]] = None  # (INPUT.CROP.TYPE, SIZE) when enabled

    @property
    def band_px(self) -> np.ndarray:
        """``(L, 2)`` smallest and largest positive object size on each level, in input pixels."""
        c = self.canonical_ratio * self.window_size * np.asarray(self.strides, np.float64)
        return np.stack([c * 2.0 ** -self.band_log2, c * 2.0 ** self.band_log2], axis=1)

    def with_(self, **kw) -> "ScaleSetup":
        return replace(self, **kw)


def in_features(cfg) -> list:
    """``MODEL.INSTANCEFCN.IN_FEATURES`` if the config has it, else ``[IN_FEATURE]``."""
    c = cfg.MODEL.INSTANCEFCN
    return list(c.IN_FEATURES) if "IN_FEATURES" in c else [c.IN_FEATURE]


def level_strides(cfg) -> Tuple[int, ...]:
    """Stride of each level the head reads, from the ``output_shape()`` of the backbone built
    on the meta device (no weights)."""
    from .backbone.inspection import build_backbone_skeleton

    shapes = build_backbone_skeleton(cfg).output_shape()
    missing = [f for f in in_features(cfg) if f not in shapes]
    if missing:
        raise ValueError(f"MODEL.INSTANCEFCN in-features {missing} are not backbone outputs {sorted(shapes)}")
    return tuple(int(shapes[f].stride) for f in in_features(cfg))


def scale_setup_from_config(cfg, strides: Optional[Sequence[int]] = None) -> ScaleSetup:
    """The :class:`ScaleSetup` of ``cfg``; ``strides`` default to :func:`level_strides`."""
    c, i = cfg.MODEL.INSTANCEFCN, cfg.INPUT
    if i.MIN_SIZE_TRAIN_SAMPLING not in ("choice", "range"):
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got {i.MIN_SIZE_TRAIN_SAMPLING!r}")
    scales = [int(i.MIN_SIZE_TRAIN)] if isinstance(i.MIN_SIZE_TRAIN, int) else [int(s) for s in i.MIN_SIZE_TRAIN]
    if i.MIN_SIZE_TRAIN_SAMPLING == "range" and len(scales) != 2:
        raise ValueError(f"MIN_SIZE_TRAIN_SAMPLING 'range' needs two values (lo, hi), got {scales}")
    crop = (i.CROP.TYPE, tuple(float(v) for v in i.CROP.SIZE)) if i.CROP.ENABLED else None
    return ScaleSetup(
        train_scales=tuple(scales), train_max_size=int(i.MAX_SIZE_TRAIN),
        test_scales=tuple(int(s) for s in c.TEST_SCALES), test_max_size=int(c.TEST_MAX_SIZE),
        strides=tuple(strides) if strides is not None else level_strides(cfg),
        window_size=int(c.WINDOW_SIZE), canonical_ratio=float(c.CANONICAL_OBJECT_RATIO),
        band_log2=float(c.POSITIVE_SCALE_LOG2), sampling=i.MIN_SIZE_TRAIN_SAMPLING, crop=crop,
    )


def resized_hw(hw: np.ndarray, short, max_size) -> np.ndarray:
    """detectron2's ``ResizeShortestEdge.get_output_shape``, vectorised.

    ``hw``: ``(..., 2)`` heights, widths; ``short``, ``max_size`` broadcast against ``hw[..., 0]``.
    Returns ``(..., 2)`` integer output heights, widths.
    """
    h, w = hw[..., 0].astype(np.float64), hw[..., 1].astype(np.float64)
    f = np.asarray(short, np.float64) / np.minimum(h, w)
    f = np.where(np.maximum(h, w) * f > max_size, max_size / np.maximum(h, w), f)
    return np.stack([np.floor(h * f + 0.5), np.floor(w * f + 0.5)], axis=-1)


def _crop_extent(image_hw: np.ndarray, crop) -> Tuple[np.ndarray, np.ndarray]:
    """``(N, 2)`` smallest and largest crop ``(h, w)`` detectron2's ``RandomCrop`` can draw."""
    hw = image_hw.astype(np.float64)
    if crop is None:
        return hw, hw
    kind, size = crop
    size = np.asarray(size, np.float64)
    if kind == "relative":
        c = np.floor(hw * size + 0.5)
        return c, c
    if kind == "relative_range":
        return np.floor(hw * size + 0.5), hw
    if kind == "absolute":
        c = np.minimum(size, hw)
        return c, c
    if kind == "absolute_range":
        return np.minimum(size[0], hw), np.minimum(size[1], hw)
    raise ValueError(f"Unknown INPUT.CROP.TYPE {kind!r}")


def _resized_longer_side(objs: ObjectSizes, crop_hw: np.ndarray, scales, max_size) -> np.ndarray:
    """``(N, K)`` longer box side after cropping to ``crop_hw`` and resizing to each scale."""
    out = resized_hw(crop_hw[:, None, :], np.asarray(scales)[None, :], max_size)  # (N, K, 2)
    fy, fx = out[..., 0] / crop_hw[:, None, 0], out[..., 1] / crop_hw[:, None, 1]
    return np.maximum(objs.box_wh[:, None, 0] * fx, objs.box_wh[:, None, 1] * fy)


def in_band(lo: np.ndarray, hi: np.ndarray, band_px: np.ndarray) -> np.ndarray:
    """Whether ``[lo, hi]`` meets the positive band of any level (elementwise over ``lo``)."""
    return ((lo[..., None] <= band_px[:, 1]) & (hi[..., None] >= band_px[:, 0])).any(axis=-1)


def train_size_range(objs: ObjectSizes, setup: ScaleSetup) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resized longer sides an object can take in training.

    Returns ``lo, hi`` of shape ``(N, K)`` (``K`` = number of scale choices, 1 for "range"
    sampling: every integer scale between the two values) and ``fits`` ``(N,)``: whether some
    crop holds the whole box. The resized size is monotone in the scale and the crop, so each
    choice (with a random crop size or a scale range) gives the interval ``[lo, hi]``.
    """
    small, large = _crop_extent(objs.image_hw, setup.crop)
    box_hw = objs.box_wh[:, ::-1]
    fits = (box_hw <= large).all(axis=1)
    small = np.minimum(np.maximum(small, box_hw), large)  # smallest crop that holds the object
    if setup.sampling == "range":
        s_lo, s_hi = [min(setup.train_scales)], [max(setup.train_scales)]
    else:
        s_lo = s_hi = list(setup.train_scales)
    lo = _resized_longer_side(objs, large, s_lo, setup.train_max_size)
    hi = _resized_longer_side(objs, small, s_hi, setup.train_max_size)
    return lo, hi, fits


def train_positive(objs: ObjectSizes, setup: ScaleSetup) -> np.ndarray:
    """``(N, K)`` whether each scale choice can make the object a positive on some level."""
    lo, hi, fits = train_size_range(objs, setup)
    return in_band(lo, hi, setup.band_px) & fits[:, None]


def train_coverage(objs: ObjectSizes, setup: ScaleSetup) -> np.ndarray:
    """``(N,)`` whether the object is a positive at >= 1 training scale and level."""
    return train_positive(objs, setup).any(axis=1)


def test_sizes(objs: ObjectSizes, scales, max_size) -> np.ndarray:
    """``(N, K)`` longer box side on each level of the model's test pyramid.

    As ``InstanceFCN.pyramid_sizes``: factor ``min(s / shorter, max_size / longer)``, rounded sizes.
    """
    hw = objs.image_hw.astype(np.float64)
    f = np.minimum(np.asarray(scales, np.float64)[None, :] / hw.min(axis=1, keepdims=True),
                   max_size / hw.max(axis=1, keepdims=True))
    fy = np.maximum(1, np.round(hw[:, :1] * f)) / hw[:, :1]
    fx = np.maximum(1, np.round(hw[:, 1:] * f)) / hw[:, 1:]
    return np.maximum(objs.box_wh[:, :1] * fx, objs.box_wh[:, 1:] * fy)


def test_coverage(objs: ObjectSizes, setup: ScaleSetup) -> np.ndarray:
    """``(N,)`` whether some test scale brings the object into the band on some level."""
    sizes = test_sizes(objs, setup.test_scales, setup.test_max_size)
    return in_band(sizes, sizes, setup.band_px).any(axis=1)


def _describe(sizes: np.ndarray) -> str:
    return f"{len(sizes)} of {int(sizes.min())}-{int(np.ceil(sizes.max()))} px" if len(sizes) else ""


def coverage_summary(objs: ObjectSizes, setup: ScaleSetup) -> dict:
    """Covered fractions and, for the uncovered objects, why (sizes on the longer box side).

    ``{"train": f, "test": f, "num_objects": N, "train_uncovered": {...}, "test_uncovered":
    {...}, "smallest_positive_px": px, "train_too_small": f, "train_too_small_below_px": (lo, hi)}``;
    each ``*_uncovered`` maps a reason ("too small", "too large", "between scales",
    "larger than the crop") to ``"<count> of <min>-<max> px"``. ``train_too_small``: the fraction
    of objects positive on no level because even the largest training scale leaves them under
    ``smallest_positive_px`` (the finest level's band, input pixels); ``train_too_small_below_px``:
    that limit in original pixels, its range over the images.
    """
    n = len(objs)
    if n == 0:
        return {"train": 1.0, "test": 1.0, "num_objects": 0, "train_uncovered": {}, "test_uncovered": {},
                "smallest_positive_px": float(setup.band_px[:, 0].min()), "train_too_small": 0.0,
                "train_too_small_below_px": (0.0, 0.0)}
    lo_band, hi_band = setup.band_px[:, 0].min(), setup.band_px[:, 1].max()
    size = objs.longer_side
    lo, hi, fits = train_size_range(objs, setup)
    train_ok = (in_band(lo, hi, setup.band_px) & fits[:, None]).any(axis=1)
    test = test_sizes(objs, setup.test_scales, setup.test_max_size)
    test_ok = in_band(test, test, setup.band_px).any(axis=1)

    def reasons(ok, biggest, smallest, extra=None):
        groups = {}
        if extra is not None:
            groups["larger than the crop"] = ~ok & extra
            ok = ok | extra
        groups["too small"] = ~ok & (biggest < lo_band)
        groups["too large"] = ~ok & (smallest > hi_band)
        groups["between scales"] = ~ok & (biggest >= lo_band) & (smallest <= hi_band)
        return {k: _describe(size[m]) for k, m in groups.items() if m.any()}

    # Positive on no level at any training scale because even the largest leaves them under
    # the finest level's band; in original pixels that limit is the smallest positive size
    # divided by the object's largest resize factor (per image).
    too_small = hi.max(axis=1) < lo_band
    limit = lo_band * size / hi.max(axis=1)
    return {
        "train": float(train_ok.mean()), "test": float(test_ok.mean()), "num_objects": n,
        "train_uncovered": reasons(train_ok, hi.max(axis=1), lo.min(axis=1), extra=~fits if setup.crop else None),
        "test_uncovered": reasons(test_ok, test.max(axis=1), test.min(axis=1)),
        "smallest_positive_px": float(lo_band),
        "train_too_small": float(too_small.mean()),
        "train_too_small_below_px": (float(limit.min()), float(limit.max())),
    }


def check_scale_coverage(objs: ObjectSizes, setup: ScaleSetup, what: str = "the training set",
                         config_file: str = "", dataset: str = "") -> dict:
    """Log the coverage of ``objs``; warn (with the sizes and the fix) under 90 %, and when 1 % or
    more of the objects are under the smallest positive size (positive on no level). Returns the
    summary."""
    s = coverage_summary(objs, setup)
    band = ", ".join(f"{a:.0f}-{b:.0f} px" for a, b in setup.band_px)
    logger.info(
        f"Scale coverage of {what} ({s['num_objects']} objects): {100 * s['train']:.1f}% are positive "
        f"windows at >= 1 training scale, {100 * s['test']:.1f}% reach the canonical size at >= 1 "
        f"test scale (positive band per level: {band})."
    )
    problems = []
    if s["train"] < WARN_BELOW:
        why = "; ".join(f"{k}: {v}" for k, v in s["train_uncovered"].items())
        problems.append(
            f"only {100 * s['train']:.1f}% of the objects of {what} can be positive windows at the "
            f"training scales INPUT.MIN_SIZE_TRAIN={list(setup.train_scales)} (MAX_SIZE_TRAIN="
            f"{setup.train_max_size}, crop {setup.crop}); the others are never learned ({why})"
        )
    if s["test"] < WARN_BELOW:
        why = "; ".join(f"{k}: {v}" for k, v in s["test_uncovered"].items())
        problems.append(
            f"only {100 * s['test']:.1f}% reach the canonical size at the test scales MODEL.INSTANCEFCN."
            f"TEST_SCALES={list(setup.test_scales)} (TEST_MAX_SIZE={setup.test_max_size}); the others "
            f"are hardly ever proposed ({why})"
        )
    if s["train_too_small"] >= WARN_TOO_SMALL:
        lo, hi = s["train_too_small_below_px"]
        problems.append(
            f"{100 * s['train_too_small']:.1f}% of the objects of {what} are positive on no level: smaller "
            f"than {lo:.0f}-{hi:.0f} px in these images (by image size), they stay under the smallest "
            f"positive size, {s['smallest_positive_px']:.0f} px (the finest level's canonical size / "
            f"2^{setup.band_log2:g}), even at the largest training scale; they are never learned and rarely "
            "proposed (detectron2's RPN reaches them with 32-px anchors): use larger scales or a finer level"
        )
    if problems:
        logger.warning(
            "Scale coverage: " + ". Also, ".join(problems) + ". Sizes are longer box sides "
            f"in the original images; positives need {band} after resizing. Fix: run "
            f"`python tools/plan_scales.py --config-file {config_file or 'YOUR_CONFIG.yaml'} "
            f"--dataset {dataset or 'YOUR_DATASET'}` and merge the overrides it prints."
        )
    return s
