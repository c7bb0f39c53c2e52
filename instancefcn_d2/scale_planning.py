"""Scale planning: the training and test scales (and a crop) for a dataset's object sizes.

Two objectives. ``plan_for_recall`` (the default of ``tools/plan_scales.py``) is described at
that function: several magnifications spanning the object sizes, the same ones in training and
at test, and window / proposal budgets for the number of objects per image. ``plan_scales``
(``--objective coverage``) finds the *fewest* scales that put each object in some positive band
once; on dense small objects (HeLa nuclei, issue 24) that kept >= 95 % coverage and lost two
thirds of the recall of a hand-picked multi-scale setup. Its algorithm (greedy set cover on a
log grid; coverage as defined in :mod:`.scale_coverage`):

* **Candidates**: scales (shorter sides) on a grid of ``2^(1/8)`` steps spanning every scale
  that can bring some object into the positive band of some level.
* **Test**: repeatedly add the candidate test scale that covers the most objects not yet
  covered, until ``target`` (default 95 %) of the objects are covered or no scale adds any.
  The whole image is run at test time, so ``TEST_MAX_SIZE`` becomes the longest side the chosen
  scales need (or ``max_test_side`` when given, which may then cap the coverage).
* **Training**: the same greedy cover of training scales with the longer side of every input
  at most ``max_train_side`` (the memory rule; default: the config's ``MAX_SIZE_TRAIN``, i.e.
  inputs no larger than the config already allows). First without a crop; if the cap keeps
  the cover under ``target`` (objects that need more upscaling than the cap allows), square
  absolute crops ``INPUT.CROP`` of decreasing side (``2^(-1/4)`` steps) are tried, and the
  largest crop (most context) whose cover reaches ``target`` is kept. detectron2 crops before
  it resizes, so a crop of side ``c`` resized to scale ``s`` magnifies by ``s / c`` in an
  input of at most ``s x s``.

Greedy set cover is within a factor ``ln N`` of the fewest scales; on object sizes it is
usually optimal, as each scale covers an interval of sizes.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .scale_coverage import ObjectSizes, ScaleSetup, coverage_summary, test_sizes, train_positive, in_band

__all__ = ["ScalePlan", "greedy_cover", "candidate_scales", "centring_margin", "object_window_px", "plan_scales",
           "plan_for_recall"]

GRID_STEP_LOG2 = 1.0 / 8  # candidate scales
CROP_STEP_LOG2 = 1.0 / 4  # candidate crop sides
MAX_CANDIDATE_SCALE = 8192


@dataclass
class ScalePlan:
    """The planned setup, the config overrides that give it, and the coverage before / after."""

    setup: ScaleSetup
    overrides: dict  # flat config keys -> values
    coverage_before: dict  # {"train": f, "test": f}
    coverage_after: dict
    notes: list = field(default_factory=list)
    objective: str = "coverage: the fewest scales that put >= target of the objects in a positive band once"
    reasons: dict = field(default_factory=dict)  # config key -> why this value

    def as_dict(self) -> dict:
        """The ``--json`` form of ``tools/plan_scales.py``."""
        return {"objective": self.objective, "coverage_before": self.coverage_before,
                "coverage_after": self.coverage_after, "overrides": self.overrides, "reasons": self.reasons,
                "notes": self.notes}


def greedy_cover(covers: np.ndarray, target: float):
    """Greedy set cover. ``covers``: ``(N, K)`` bool. Returns ``(chosen column indices, fraction)``."""
    n = covers.shape[0]
    if n == 0:
        return [], 1.0
    covered = np.zeros(n, bool)
    chosen = []
    while covered.mean() < target:
        gain = (covers & ~covered[:, None]).sum(axis=0)
        best = int(gain.argmax()) if gain.size else 0
        if not gain.size or gain[best] == 0:
            break
        chosen.append(best)
        covered |= covers[:, best]
    return chosen, float(covered.mean())


def candidate_scales(objs: ObjectSizes, setup: ScaleSetup, side_hw: Optional[np.ndarray] = None) -> np.ndarray:
    """Integer scales on a ``2^(1/8)`` grid from the smallest to the largest useful shorter side.

    ``side_hw``: ``(N, 2)`` size of the resized region (the crop, or the image by default).
    """
    hw = objs.image_hw if side_hw is None else side_hw
    short = hw.min(axis=1).astype(np.float64)
    size = np.maximum(objs.longer_side, 1.0)
    band = setup.band_px
    lo = max(8.0, float((band[:, 0].min() / size * short).min()) / 2 ** GRID_STEP_LOG2)
    hi = min(MAX_CANDIDATE_SCALE, float((band[:, 1].max() / size * short).max()) * 2 ** GRID_STEP_LOG2)
    hi = max(hi, lo)
    n = int(np.ceil(np.log2(hi / lo) / GRID_STEP_LOG2)) + 1
    return np.unique(np.round(lo * 2.0 ** (GRID_STEP_LOG2 * np.arange(n))).astype(int))


def _plan_test(objs, setup, target, max_test_side):
    cands = candidate_scales(objs, setup)
    cap = max_test_side if max_test_side else np.inf
    sizes = test_sizes(objs, cands, cap)
    chosen, _ = greedy_cover(in_band(sizes, sizes, setup.band_px), target)
    scales = sorted(int(cands[i]) for i in chosen) or list(setup.test_scales)
    if max_test_side:
        max_size = int(max_test_side)
    else:  # the longest side any image reaches at the largest scale: the cap never binds
        hw = objs.image_hw.astype(np.float64)
        need = int(np.ceil((max(scales) * hw.max(axis=1) / hw.min(axis=1)).max())) if len(objs) else max(scales)
        max_size = max(need, max(scales))
    return tuple(scales), max_size


def _plan_train(objs, setup, target, cap):
    """Best ``(fraction, scales, crop)``: no crop if it reaches ``target``, else the largest crop that does."""
    base = setup.with_(sampling="choice", train_max_size=int(cap), crop=None)

    def cover(crop):
        s = base.with_(crop=crop)
        side = objs.image_hw if crop is None else np.minimum(objs.image_hw, crop[1][0])
        cands = candidate_scales(objs, s, side)
        cands = cands[cands <= cap] if (cands <= cap).any() else np.array([cap])
        chosen, frac = greedy_cover(train_positive(objs, s.with_(train_scales=tuple(int(c) for c in cands))), target)
        return frac, tuple(sorted(int(cands[i]) for i in chosen)), crop

    best = cover(None)
    if best[0] >= target or len(objs) == 0:
        return best
    side = float(objs.image_hw.max())
    smallest = max(8.0, float(np.percentile(objs.longer_side, 100 * (1 - target))))
    while side * 2 ** -CROP_STEP_LOG2 >= smallest:
        side *= 2 ** -CROP_STEP_LOG2
        c = int(round(side))
        trial = cover(("absolute", (c, c)))
        if trial[0] > best[0]:
            best = trial
        if trial[0] >= target:
            break
    return best


def plan_scales(objs: ObjectSizes, setup: ScaleSetup, target: float = 0.95,
                max_train_side: Optional[int] = None, max_test_side: Optional[int] = None) -> ScalePlan:
    """Plan training scales (+ crop) and test scales for ``objs`` (see the module doc)."""
    before = coverage_summary(objs, setup)
    cap = int(max_train_side or setup.train_max_size)
    frac, scales, crop = _plan_train(objs, setup, target, cap)
    test_scales, test_max = _plan_test(objs, setup, target, max_test_side)
    planned = setup.with_(train_scales=scales or setup.train_scales, train_max_size=cap, sampling="choice",
                          crop=crop, test_scales=test_scales, test_max_size=test_max)
    after = coverage_summary(objs, planned)
    overrides = _training_input_overrides(planned.train_scales, cap, crop)
    overrides["MODEL.INSTANCEFCN.TEST_SCALES"] = list(test_scales)
    overrides["MODEL.INSTANCEFCN.TEST_MAX_SIZE"] = int(test_max)
    notes = []
    notes += _coverage_shortfalls(after, target)
    return ScalePlan(
        setup=planned, overrides=overrides,
        coverage_before={"train": before["train"], "test": before["test"]},
        coverage_after={"train": after["train"], "test": after["test"]}, notes=notes,
    )


# ------------------------------------------------------------------------------ recall
RUN_STEP_LOG2 = 1.0 / 4  # between the magnifications of a recall plan (the paper's pyramid: 1.5x)
# Windows kept per object and level before NMS (the positions near its centre, and room for the
# background and duplicates that outrank some of them): on HeLa tiles, 16 (TOPK 500) scored lower
# mask AR@100 and AR@1000 than 1000 windows on the same model (issue 24's closing note).
WINDOWS_PER_OBJECT = 32
DETECTIONS_PER_OBJECT = 5  # proposals kept per object (COCO's default 100 for ~7-15 objects)
MIN_CROP_PER_OBJECT = 2.0  # training crops at least this many times the large objects' side
# Random crops without an object above which the crops are placed on objects (INPUT.CROP.AROUND_OBJECT):
# when most iterations would see no positive window. The HeLa tiles of tools/real_data_experiment.py
# (about a quarter empty at the planned crop) met issue 24's goal with crops anywhere; the
# bacteria colony (most crops empty) did not learn.
EMPTY_CROP_LIMIT = 0.5
CROP_GRID = 16  # crop origins per image side at which empty_crop_fraction looks


def empty_crop_fraction(objs: ObjectSizes, side: int, grid: int = CROP_GRID) -> Optional[float]:
    """Fraction of ``side`` x ``side`` crops of the images with objects that hold no object's box
    centre: crop origins on a ``grid`` x ``grid`` lattice of each image (a uniform random crop),
    mean over images. None without ``objs.box_center`` / ``image_index``."""
    if objs.box_center is None or objs.image_index is None or not len(objs):
        return None
    empty = []
    for i in np.unique(objs.image_index):
        sel = objs.image_index == i
        (h, w), (cx, cy) = objs.image_hw[sel][0], objs.box_center[sel].T
        ch, cw = min(side, h), min(side, w)
        oy, ox = np.linspace(0, h - ch, grid), np.linspace(0, w - cw, grid)
        in_y = (cy[None] >= oy[:, None]) & (cy[None] < oy[:, None] + ch)  # (grid, n)
        in_x = (cx[None] >= ox[:, None]) & (cx[None] < ox[:, None] + cw)
        empty.append(1.0 - (in_y[:, None, :] & in_x[None, :, :]).any(-1).mean())
    return float(np.mean(empty))


def _round_up(x: float, step: int = 100) -> int:
    return int(np.ceil(x / step) * step)


def object_window_px(size: float, setup: ScaleSetup) -> float:
    """The window (``WINDOW_SIZE`` x stride, input px) of the level whose canonical object size
    is nearest ``size`` on a log scale: the square a positive of that object is assembled in."""
    strides = np.asarray(setup.strides, np.float64)
    level = int(np.abs(np.log2(size / (setup.canonical_ratio * setup.window_size * strides))).argmin())
    return float(setup.window_size * strides[level])


def magnification_hits(sizes: np.ndarray, mags: np.ndarray, band_px: np.ndarray) -> np.ndarray:
    """``(R, N)`` number of magnifications of each run ``mags`` ``(R, K)`` at which each object
    (longer side ``sizes`` ``(N,)``) lies in the positive band of some level."""
    scaled = sizes[None, :, None] * mags[:, None, :]  # (R, N, K)
    return in_band(scaled, scaled, band_px).sum(axis=-1)


def centring_margin(small: float, large: float, mags: np.ndarray, band_px: np.ndarray) -> np.ndarray:
    """``(R,)`` log2 margin of each run of magnifications ``mags`` ``(R, K)``: how far the small
    objects at the run's lowest magnification and the large ones at its highest stay inside the
    span of the positive bands (the smaller of the two; largest when the run centres the objects)."""
    lo, hi = band_px[:, 0].min(), band_px[:, 1].max()
    return np.minimum(np.log2(small * mags[:, 0] / lo), np.log2(hi / (large * mags[:, -1])))


def plan_for_recall(objs: ObjectSizes, setup: ScaleSetup, target: float = 0.95, num_scales: int = 5,
                    max_train_side: Optional[int] = None, max_test_side: Optional[int] = None,
                    topk_per_scale: int = 0, detections_per_image: int = 0) -> ScalePlan:
    """A plan for recall: each object seen at several magnifications, in training and at test.

    * **Magnifications**: a run of ``num_scales`` magnifications ``2^(1/4)`` apart (one octave
      for 5, as the hand-picked x2.5-5 of issue 24). Among runs starting on a ``2^(1/8)`` grid,
      the ones that put ``>= target`` of the objects in a positive band at the most of its
      magnifications (``h``); of those, the one that centres the objects (5th-95th percentile)
      in the span of the bands (:func:`centring_margin`). Pushing the run to one end of the
      feasible range to reach a few more tiny objects (cut-off fragments at tile borders, on
      HeLa) cost recall on the rest: the crossed runs of tools/real_data_experiment.py. An object proposed at
      several scales gets several windows aligned differently; NMS keeps the best, which a
      single scale cannot offer.
    * **Test**: ``TEST_SCALES`` = the magnifications times the images' median shorter side;
      ``TEST_MAX_SIZE`` what the largest needs (or ``max_test_side``).
    * **Training**: the *same* magnifications, so that the sizes the windows learn are the
      sizes they see at test. When the whole image at the largest magnification would exceed
      ``max_train_side`` (default the config's ``MAX_SIZE_TRAIN``), a square absolute crop of
      side ``max_train_side / largest magnification`` is resized to ``crop x magnification``;
      without an explicit ``max_train_side`` the crop is at least twice the large objects
      (95th percentile), and ``MAX_SIZE_TRAIN`` grows to fit it.
    * **Sparse images**: when more than ``EMPTY_CROP_LIMIT`` of random crops would hold no
      object (:func:`empty_crop_fraction`), ``INPUT.CROP.AROUND_OBJECT`` places each crop on a
      random object, whole where it fits (data/object_crop.py). The crop then needs only the
      window the large objects are assembled in at the largest magnification
      (:func:`object_window_px`), not twice their side: twice the side was for crops placed
      anywhere, which hold an object of that size whole one time in four.
    * **Dense images**: ``TOPK_PER_SCALE`` (windows kept per level and scale) >= 32 x the 95th
      percentile of objects per image, ``TEST.DETECTIONS_PER_IMAGE`` >= 5 x the most objects
      in an image (rounded up to 100; never below the config's ``topk_per_scale`` /
      ``detections_per_image``): a window budget for 10 objects leaves 150 unproposed.
    """
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    before = coverage_summary(objs, setup)
    cap = int(max_train_side or setup.train_max_size)
    band = setup.band_px
    size = np.maximum(objs.longer_side, 1.0)
    run = 2.0 ** (RUN_STEP_LOG2 * np.arange(num_scales))
    lo = band[:, 0].min() / size.max() / run[-1]
    hi = band[:, 1].max() / size.min()
    starts = lo * 2.0 ** (GRID_STEP_LOG2 * np.arange(int(np.ceil(np.log2(hi / lo) / GRID_STEP_LOG2)) + 1))
    mags = starts[:, None] * run[None, :]
    hits = magnification_hits(size, mags, band)
    small, large = float(np.percentile(size, 5)), float(np.percentile(size, 95))
    margin = centring_margin(small, large, mags, band)
    for h in range(num_scales, 0, -1):
        ok = (hits >= h).mean(axis=1) >= target
        if ok.any():  # of the runs reaching the target with h hits: the one that centres the objects in the bands
            r = int(np.where(ok, margin, -np.inf).argmax())
            break
    else:
        h, r = 1, int((hits >= 1).mean(axis=1).argmax())
    m = mags[r]
    hw = objs.image_hw.astype(np.float64)
    short = float(np.median(hw.min(axis=1)))
    test_scales = tuple(int(round(x * short)) for x in m)
    need = int(np.ceil((m[-1] * hw.max(axis=1)).max()))
    test_max = int(max_test_side) if max_test_side else max(need, max(test_scales))
    if m[-1] * hw.max() <= cap:
        crop, train_scales, around, empty = None, test_scales, False, None
        crop_why = f"whole images: at x{m[-1]:.2f} the longest image side is <= MAX_SIZE_TRAIN {cap}"
    else:
        c = int(np.floor(cap / m[-1]))
        raise_crop = c < MIN_CROP_PER_OBJECT * large and not max_train_side
        plain = int(np.ceil(MIN_CROP_PER_OBJECT * large)) if raise_crop else c  # the crop if placed anywhere
        empty = empty_crop_fraction(objs, plain)
        around = empty is not None and empty > EMPTY_CROP_LIMIT  # INPUT.CROP.AROUND_OBJECT
        crop_why = (f"{c} x {c} px crops: the largest magnification x{m[-1]:.2f} times the crop stays within "
                    f"MAX_SIZE_TRAIN {cap} (training inputs no larger than the config's)")
        if raise_crop:
            if around:  # the crop holds its drawn object whole: it needs that object's window, not 2x the object
                window = object_window_px(large * m[-1], setup) / m[-1]
                c = max(c, int(np.ceil(max(window, large))))
                why = (f"the window of the large objects ({large:.0f} px, 95th percentile: {window:.0f} px at "
                       f"x{m[-1]:.2f}), as each crop is placed to hold a drawn object whole")
                empty = empty_crop_fraction(objs, c)  # the reason line's figure, at the crop kept
            else:
                c = plain
                why = (f"{MIN_CROP_PER_OBJECT:g} x the large objects ({large:.0f} px, 95th percentile), so that a "
                       "crop placed anywhere holds whole objects")
            cap = int(np.ceil(c * m[-1]))
            crop_why = (f"{c} x {c} px crops: {why}; MAX_SIZE_TRAIN raised to {cap} for the largest "
                        f"magnification x{m[-1]:.2f} (pass --max-train-side to cap it instead)")
        crop, train_scales = ("absolute", (c, c)), tuple(int(round(x * c)) for x in m)
    planned = setup.with_(train_scales=train_scales, train_max_size=cap, sampling="choice", crop=crop,
                          test_scales=test_scales, test_max_size=test_max)
    after = coverage_summary(objs, planned)
    per_image = objs.objects_per_image() if objs.image_index is not None else np.asarray([len(objs)])
    topk = max(int(topk_per_scale), _round_up(WINDOWS_PER_OBJECT * np.percentile(per_image, 95)))
    dets = max(int(detections_per_image), _round_up(DETECTIONS_PER_OBJECT * per_image.max()))
    mag_text = ", ".join(f"x{x:.2f}" for x in m)
    sizes_text = f"{np.percentile(size, 5):.0f}-{np.percentile(size, 95):.0f} px (5th-95th percentile)"
    bands = ", ".join(f"{a:.0f}-{b:.0f}" for a, b in band)
    overrides = _training_input_overrides(train_scales, cap, crop)
    if empty is not None:
        overrides["INPUT.CROP.AROUND_OBJECT"] = bool(around)
    overrides.update({
        "MODEL.INSTANCEFCN.TEST_SCALES": list(test_scales),
        "MODEL.INSTANCEFCN.TEST_MAX_SIZE": int(test_max),
        "MODEL.INSTANCEFCN.TOPK_PER_SCALE": topk,
        "TEST.DETECTIONS_PER_IMAGE": dets,
    })
    mags_why = (f"magnifications {mag_text}: objects of {sizes_text} land in the positive bands ({bands} px) "
                f"at >= {h} of the {num_scales} magnifications for >= {100 * target:.0f}% of them; of such runs, the "
                f"one that centres them in the bands (the small at the lowest and the large at the highest "
                f"magnification stay 2^{margin[r]:.2f} inside)")
    reasons = {
        "INPUT.MIN_SIZE_TRAIN": f"the test magnifications in training ({crop_why})",
        "INPUT.CROP": crop_why,
        **({} if empty is None else {"INPUT.CROP.AROUND_OBJECT": (
            f"{100 * empty:.0f}% of random {crop[1][0]} px crops hold no object centre ("
            + (f"over {100 * EMPTY_CROP_LIMIT:.0f}%: each crop is placed on a random object)" if around
               else f"at most {100 * EMPTY_CROP_LIMIT:.0f}%: crops anywhere, as detectron2's)"))}),
        "MODEL.INSTANCEFCN.TEST_SCALES": f"{mags_why}; times the median shorter side {short:.0f} px",
        "MODEL.INSTANCEFCN.TEST_MAX_SIZE": "the longest side the largest test scale needs"
        + (f" (capped at --max-test-side {max_test_side})" if max_test_side else ""),
        "MODEL.INSTANCEFCN.TOPK_PER_SCALE": f"{WINDOWS_PER_OBJECT} windows per object x "
        f"{np.percentile(per_image, 95):.0f} objects per image (95th percentile), rounded up",
        "TEST.DETECTIONS_PER_IMAGE": f"{DETECTIONS_PER_OBJECT} proposals per object x {per_image.max()} objects "
        "in the densest image, rounded up (at least the config's value)",
    }
    notes = []
    if len(set(hw.min(axis=1))) > 1:
        notes.append(f"images differ in size: magnifications hold for the median shorter side {short:.0f} px")
    if crop is not None and crop[1][0] < (large if around else MIN_CROP_PER_OBJECT * large):
        notes.append(f"the {crop[1][0]} px crops are under {MIN_CROP_PER_OBJECT:g} x the large objects ({large:.0f} px): "
                     "many will be cut; raise --max-train-side (costs training time) or lower --scales")
    notes += _coverage_shortfalls(after, target)
    return ScalePlan(
        setup=planned, overrides=overrides,
        coverage_before={"train": before["train"], "test": before["test"]},
        coverage_after={"train": after["train"], "test": after["test"]}, notes=notes,
        objective=(f"recall: every object at several magnifications ({num_scales}, 2^(1/4) apart), the same in "
                   "training and test, within the training input size; window and proposal budgets for the "
                   "objects per image"),
        reasons=reasons,
    )


def _coverage_shortfalls(after, target: float) -> List[str]:
    """A note for each split whose planned coverage stays under ``target``, with what is uncovered."""
    notes = []
    for split in ("train", "test"):
        if after[split] < target:
            why = "; ".join(f"{k}: {v}" for k, v in after[f"{split}_uncovered"].items())
            notes.append(f"{split} coverage {100 * after[split]:.1f}% stays under the target "
                         f"{100 * target:.0f}% ({why}).")
    return notes


def _training_input_overrides(train_scales, cap, crop) -> dict:
    """detectron2's INPUT keys for planned training scales, the size cap and an optional
    ``(type, (h, w))`` crop."""
    overrides = {
        "INPUT.MIN_SIZE_TRAIN": list(train_scales),
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
        "INPUT.MAX_SIZE_TRAIN": cap,
        "INPUT.CROP.ENABLED": crop is not None,
    }
    if crop is not None:
        overrides["INPUT.CROP.TYPE"] = crop[0]
        overrides["INPUT.CROP.SIZE"] = [int(v) for v in crop[1]]
    return overrides
