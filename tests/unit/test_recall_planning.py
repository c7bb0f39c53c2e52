"""The recall plan (instancefcn_d2/scale_planning.plan_for_recall): several magnifications, the
same in training and test, and budgets from the objects per image; checked against a naive
per-object loop over magnifications and levels, and a finer search over runs."""
import math

import numpy as np
import pytest

import instancefcn_d2  # noqa: F401
from instancefcn_d2.scale_coverage import ObjectSizes, ScaleSetup
from instancefcn_d2.scale_planning import plan_for_recall

FPN = ScaleSetup(train_scales=(128,), train_max_size=288, test_scales=(192,), test_max_size=288,
                 strides=(4, 8, 16), band_log2=0.5)
ONE_LEVEL = FPN.with_(strides=(8,), band_log2=0.25, train_max_size=480)


def dense_small(seed=0, images=6):
    """Images of 300 x 400 px with 20-80 objects of 12-30 px each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 80, images)
    n = counts.sum()
    side = rng.uniform(12, 30, n)
    wh = np.stack([side, side * rng.uniform(0.7, 1.0, n)], axis=1)
    return ObjectSizes(wh, np.tile([300, 400], (n, 1)), np.repeat(np.arange(images), counts)), counts


def hits(size, mags, setup):
    """Naive: at how many magnifications the object is positive on some level."""
    canon = [setup.canonical_ratio * setup.window_size * s for s in setup.strides]
    return sum(any(abs(math.log2(size * m / c)) <= setup.band_log2 + 1e-9 for c in canon) for m in mags)


@pytest.mark.parametrize("setup", [FPN, ONE_LEVEL], ids=["pyramid", "one-level"])
def test_recall_plan_sees_objects_at_the_most_magnifications(setup):
    objs, counts = dense_small()
    plan = plan_for_recall(objs, setup, target=0.95, num_scales=5)
    ov = plan.overrides
    mags = np.asarray(ov["MODEL.INSTANCEFCN.TEST_SCALES"]) / 300.0
    assert len(mags) == 5 and np.allclose(np.diff(np.log2(mags)), 0.25, atol=0.01)
    # the same magnifications in training: crop side x magnification
    crop = ov["INPUT.CROP.SIZE"][0] if ov["INPUT.CROP.ENABLED"] else 300
    assert np.allclose(np.asarray(ov["INPUT.MIN_SIZE_TRAIN"]) / crop, mags, rtol=0.01)
    assert max(ov["INPUT.MIN_SIZE_TRAIN"]) <= ov["INPUT.MAX_SIZE_TRAIN"]
    sizes = objs.longer_side
    got = [hits(s, mags, setup) for s in sizes]
    h = int(np.sort(got)[int(np.floor(0.05 * len(got)))])  # reached by >= 95 % of the objects
    # no run (searched on a 2^(1/64) grid) reaches the target with more magnifications per object
    best = max(np.mean([hits(s, m0 * 2.0 ** (0.25 * np.arange(5)), setup) >= h + 1 for s in sizes])
               for m0 in 2.0 ** np.arange(-2, 5, 1 / 64))
    assert best < 0.95
    assert plan.coverage_after["test"] >= 0.95
    # dense images: budgets from the objects per image
    assert ov["MODEL.INSTANCEFCN.TOPK_PER_SCALE"] == int(np.ceil(32 * np.percentile(counts, 95) / 100) * 100)
    assert ov["TEST.DETECTIONS_PER_IMAGE"] == int(np.ceil(5 * counts.max() / 100) * 100)
    assert set(plan.reasons) >= {"MODEL.INSTANCEFCN.TEST_SCALES", "INPUT.MIN_SIZE_TRAIN", "TEST.DETECTIONS_PER_IMAGE",
                                 "MODEL.INSTANCEFCN.TOPK_PER_SCALE"}
    assert plan.objective.startswith("recall")


def test_budgets_never_below_the_config():
    objs, _ = dense_small(images=2)
    plan = plan_for_recall(objs, FPN, topk_per_scale=10000, detections_per_image=5000)
    assert plan.overrides["MODEL.INSTANCEFCN.TOPK_PER_SCALE"] == 10000
    assert plan.overrides["TEST.DETECTIONS_PER_IMAGE"] == 5000


def test_crop_holds_large_objects_unless_the_input_is_capped():
    objs, _ = dense_small()
    large = np.percentile(objs.longer_side, 95)
    free = plan_for_recall(objs, FPN)
    assert free.overrides["INPUT.CROP.SIZE"][0] >= 2 * large
    capped = plan_for_recall(objs, FPN, max_train_side=200)
    assert capped.overrides["INPUT.MAX_SIZE_TRAIN"] == 200 and max(capped.overrides["INPUT.MIN_SIZE_TRAIN"]) <= 200
    assert any("will be cut" in n for n in capped.notes)


def test_budgets_follow_the_objects_per_image():
    counts = np.arange(1, 21)  # 20 images with 1..20 objects: 95th percentile 19.05, most 20
    n = counts.sum()
    objs = ObjectSizes(np.full((n, 2), 20.0), np.tile([300, 400], (n, 1)), np.repeat(np.arange(20), counts))
    ov = plan_for_recall(objs, FPN).overrides
    assert ov["MODEL.INSTANCEFCN.TOPK_PER_SCALE"] == 700  # 32 x 19.05 = 610 -> 700 (the 90th would give 600)
    assert ov["TEST.DETECTIONS_PER_IMAGE"] == 100  # 5 x 20


def test_recall_plan_centres_the_objects_in_the_bands():
    """Of the runs that reach the target at every magnification, the plan takes the one that
    keeps the 5th-percentile objects (at its lowest magnification) and the 95th (at its highest)
    furthest inside the bands' span, not one at an end of the feasible range. A few tiny
    fragments (as nuclei cut at tile borders) stay under 5 % and must not drag the run up."""
    rng = np.random.default_rng(3)
    side = np.concatenate([rng.uniform(22, 40, 400), rng.uniform(4, 12, 12)])  # 3 % fragments
    objs = ObjectSizes(np.stack([side, side], 1), np.tile([256, 256], (len(side), 1)), np.arange(len(side)) // 20)
    plan = plan_for_recall(objs, FPN, target=0.95, num_scales=5)
    mags = np.asarray(plan.overrides["MODEL.INSTANCEFCN.TEST_SCALES"]) / 256.0
    canon = [FPN.canonical_ratio * FPN.window_size * s for s in FPN.strides]
    lo, hi = canon[0] * 2 ** -FPN.band_log2, canon[-1] * 2 ** FPN.band_log2
    small, large = np.percentile(side, 5), np.percentile(side, 95)

    def margin(m0):  # naive: the smaller log2 distance to the span's ends
        return min(math.log2(small * m0 / lo), math.log2(hi / (large * m0 * 2.0)))

    def all_hit(m0):
        run = m0 * 2.0 ** (0.25 * np.arange(5))
        return np.mean([hits(s, run, FPN) == 5 for s in side]) >= 0.95

    grid = [m0 for m0 in 2.0 ** np.arange(-2, 5, 1 / 64) if all_hit(m0)]
    best = max(grid, key=margin)
    assert abs(math.log2(mags[0] / best)) <= 1 / 16 + 0.01  # the planner's grid is 2^(1/8)
    assert margin(mags[0]) >= margin(best) - 1 / 16
    assert margin(mags[0]) > margin(max(grid)) + 0.1  # not the top of the feasible range


def test_empty_crop_fraction_matches_every_crop_origin():
    from instancefcn_d2.scale_planning import empty_crop_fraction

    rng = np.random.default_rng(3)
    side, size, counts = 20, 61, [1, 3, 6]
    index = np.repeat(np.arange(len(counts)), counts)
    centres = rng.uniform(0, size, (len(index), 2))
    objs = ObjectSizes(np.full((len(index), 2), 4.0), np.tile([size, size], (len(index), 1)), index, centres)
    empty = []
    for i in range(len(counts)):  # every integer origin of every image (the grid below is exactly these)
        c = centres[index == i]
        holds = [any(ox <= x < ox + side and oy <= y < oy + side for x, y in c)
                 for oy in range(size - side + 1) for ox in range(size - side + 1)]
        empty.append(1 - np.mean(holds))
    assert empty_crop_fraction(objs, side, grid=size - side + 1) == pytest.approx(np.mean(empty))


def test_sparse_images_get_crops_placed_on_objects():
    # 600 x 800 px images with 2-3 objects of 30-40 px in one corner: the cap of 288 px needs crops
    rng = np.random.default_rng(0)
    counts = np.array([2, 3, 2, 3])
    n = counts.sum()
    side = rng.uniform(30, 40, n)
    sparse = ObjectSizes(np.stack([side, side], 1), np.tile([600, 800], (n, 1)), np.repeat(np.arange(4), counts),
                         rng.uniform(20, 120, (n, 2)))
    plan = plan_for_recall(sparse, FPN, target=0.95, num_scales=5)
    assert plan.overrides["INPUT.CROP.ENABLED"] and plan.overrides["INPUT.CROP.AROUND_OBJECT"] is True
    assert "placed on a random object" in plan.reasons["INPUT.CROP.AROUND_OBJECT"]
    # a crop placed to hold its object whole needs that object's window, not twice the object: the
    # window of the level whose positive band holds the large objects at the largest magnification
    large, top = np.percentile(side, 95), max(plan.overrides["MODEL.INSTANCEFCN.TEST_SCALES"]) / 600.0
    canon = [FPN.canonical_ratio * FPN.window_size * s for s in FPN.strides]
    window = [FPN.window_size * s for s, c in zip(FPN.strides, canon) if abs(math.log2(large * top / c)) <= 0.5]
    crop = plan.overrides["INPUT.CROP.SIZE"][0]
    assert len(window) == 1 and abs(crop - window[0] / top) <= 1.5
    assert plan.overrides["INPUT.MAX_SIZE_TRAIN"] == pytest.approx(crop * top, abs=2)
    assert "window" in plan.reasons["INPUT.CROP"] and not any("will be cut" in n for n in plan.notes)
    # dense images: the same objects everywhere -> crops anywhere, as detectron2's
    dense_n = 1200
    side = rng.uniform(30, 40, dense_n)
    dense = ObjectSizes(np.stack([side, side], 1), np.tile([600, 800], (dense_n, 1)),
                        np.repeat(np.arange(4), dense_n // 4), rng.uniform(0, [800, 600], (dense_n, 2)))
    plan = plan_for_recall(dense, FPN, target=0.95, num_scales=5)
    assert plan.overrides["INPUT.CROP.ENABLED"] and plan.overrides["INPUT.CROP.AROUND_OBJECT"] is False
