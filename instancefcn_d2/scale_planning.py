"""Scale planning: the fewest training and test scales (and a crop) that cover a dataset's objects.

Algorithm (greedy set cover on a log grid; coverage as defined in :mod:`.scale_coverage`):

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
from typing import Optional

import numpy as np

from .scale_coverage import ObjectSizes, ScaleSetup, coverage_summary, test_sizes, train_positive, in_band

__all__ = ["ScalePlan", "greedy_cover", "candidate_scales", "plan_scales"]

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

    def as_dict(self) -> dict:
        """The ``--json`` form of ``tools/plan_scales.py``."""
        return {"coverage_before": self.coverage_before, "coverage_after": self.coverage_after,
                "overrides": self.overrides, "notes": self.notes}


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
    overrides = {
        "INPUT.MIN_SIZE_TRAIN": list(planned.train_scales),
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
        "INPUT.MAX_SIZE_TRAIN": cap,
        "INPUT.CROP.ENABLED": crop is not None,
    }
    if crop is not None:
        overrides["INPUT.CROP.TYPE"] = crop[0]
        overrides["INPUT.CROP.SIZE"] = [int(v) for v in crop[1]]
    overrides["MODEL.INSTANCEFCN.TEST_SCALES"] = list(test_scales)
    overrides["MODEL.INSTANCEFCN.TEST_MAX_SIZE"] = int(test_max)
    notes = []
    for split in ("train", "test"):
        if after[split] < target:
            why = "; ".join(f"{k}: {v}" for k, v in after[f"{split}_uncovered"].items())
            notes.append(f"{split} coverage {100 * after[split]:.1f}% stays under the target "
                         f"{100 * target:.0f}% ({why}).")
    return ScalePlan(
        setup=planned, overrides=overrides,
        coverage_before={"train": before["train"], "test": before["test"]},
        coverage_after={"train": after["train"], "test": after["test"]}, notes=notes,
    )
