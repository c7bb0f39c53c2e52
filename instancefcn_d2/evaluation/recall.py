"""Class-agnostic average recall of proposals: COCOeval with ``useCats = 0`` on COCO results,
read out as AR@N per maximum number of proposals and per area range.

``score_proposals`` is the whole computation (mask and box AR, with the open-world category
subset and budget rule of :mod:`.open_world`); ``run_proposal_cocoeval`` and
``proposal_recall`` are its two steps; ``format_ar_table`` prints the result.
"""
import contextlib
import copy
import io
from collections import OrderedDict

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from .open_world import BUDGET_RULES, CategorySubsetCOCOeval, drop_proposals_on_ignored

__all__ = ["format_ar_table", "proposal_recall", "run_proposal_cocoeval", "score_proposals"]

# (result key, pycocotools iouType)
_TASKS = (("segm_proposals", "segm"), ("box_proposals", "bbox"))
_AREA_KEYS = (("ARs", "small"), ("ARm", "medium"), ("ARl", "large"))


def _all_have_segmentation(coco_gt, img_ids):
    return all("segmentation" in a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_ids)))


def _load_results(coco_gt, coco_results, iou_type):
    """``coco_gt.loadRes`` on shallow copies holding only the fields of ``iou_type``.

    loadRes writes into each dict, and picks its box branch whenever "bbox" is present (which
    would score masks by box area), so segm results drop "bbox" and box results drop
    "segmentation". An empty list (which loadRes rejects) gives an empty result set.
    """
    drop = "bbox" if iou_type == "segm" else "segmentation"
    anns = [{k: v for k, v in r.items() if k != drop} for r in coco_results]
    if not anns:
        res = COCO()
        res.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            res.createIndex()
        return res
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(anns)


def run_proposal_cocoeval(coco_gt, coco_results, iou_type, img_ids, max_dets, eval_category_ids=None):
    """Evaluate + accumulate a class-agnostic ``COCOeval``; returns it (see ``eval["recall"]``).

    With ``eval_category_ids``, ground truth of the other categories is ignored (see
    :class:`.open_world.CategorySubsetCOCOeval`); the budget rule is the caller's.
    """
    coco_dt = _load_results(coco_gt, coco_results, iou_type)
    if eval_category_ids:
        cocoeval = CategorySubsetCOCOeval(coco_gt, coco_dt, iou_type, eval_category_ids)
    else:
        cocoeval = COCOeval(coco_gt, coco_dt, iou_type)
    cocoeval.params.useCats = 0
    # Even with useCats=0, COCOeval only collects gts/dts whose category_id is in
    # params.catIds (default: the gt's categories), so category-1 proposals on a dataset
    # without a category 1 would be silently dropped (AR 0). List every category present.
    cocoeval.params.catIds = sorted(
        set(coco_gt.getCatIds())
        | {a["category_id"] for a in coco_gt.dataset.get("annotations", [])}
        | {r["category_id"] for r in coco_results}
    )
    cocoeval.params.maxDets = list(max_dets)
    cocoeval.params.imgIds = sorted(set(img_ids))
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
        cocoeval.evaluate()
        cocoeval.accumulate()
    return cocoeval


def score_proposals(coco_gt, coco_results, img_ids, max_dets, eval_category_ids=None, budget_rule="oln"):
    """``{"segm_proposals": AR dict, "box_proposals": AR dict}`` (percent) of COCO results.

    Mask AR is skipped when some ground truth of ``img_ids`` has no mask or some result has no
    "segmentation" (box proposals). ``eval_category_ids``
    and ``budget_rule`` are as for :class:`SegmentProposalEvaluator`.
    """
    if budget_rule not in BUDGET_RULES:
        raise ValueError(f"budget_rule must be one of {BUDGET_RULES}, got {budget_rule!r}")
    results = OrderedDict()
    for key, iou_type in _TASKS:
        if iou_type == "segm" and (not _all_have_segmentation(coco_gt, img_ids)
                                   or any("segmentation" not in r for r in coco_results)):
            continue  # ground truth without masks, or box proposals (RPN alone): box AR only
        scored = coco_results
        if eval_category_ids and budget_rule == "exclude_seen":
            scored = drop_proposals_on_ignored(coco_gt, coco_results, eval_category_ids, iou_type)
        cocoeval = run_proposal_cocoeval(coco_gt, scored, iou_type, img_ids, max_dets, eval_category_ids)
        results[key] = proposal_recall(cocoeval, max_dets)
    return results


def proposal_recall(cocoeval, max_dets):
    """AR (%) at each max_det and per area range at the largest, from an accumulated COCOeval.

    ``eval["recall"]`` has shape (T IoU thresholds, K categories (1 with useCats=0), A area
    ranges, M maxDets) and holds -1 where a cell has no ground truth; AR is the mean over the
    valid cells (as ``COCOeval.summarize`` does), None when there is none (no ground truth in
    that range: recall is undefined, and None is ``null`` in JSON). Reading it directly
    works for any maxDets, unlike ``stats``, whose rows assume exactly three maxDets.
    """
    p = cocoeval.params
    recall = cocoeval.eval["recall"]

    def ar(area_label, max_det):
        r = recall[:, :, p.areaRngLbl.index(area_label), list(p.maxDets).index(max_det)]
        r = r[r > -1]
        return float(np.mean(r) * 100) if r.size else None

    out = OrderedDict((f"AR@{m}", ar("all", m)) for m in max_dets)
    top = max(max_dets)
    for key, label in _AREA_KEYS:
        out[f"{key}@{top}"] = ar(label, top)
    return out


def format_ar_table(results):
    """``{"segm_proposals": {metric: value}, ...}`` -> a text table, one row per task.

    A None value (an area range without ground truth, where recall is undefined) prints as "–".
    """
    if not results:
        return "(no results)"
    metrics = list(next(iter(results.values())).keys())

    def cell(v):
        return "–" if v is None else f"{v:.3f}"

    rows = [[task] + [cell(results[task].get(m)) for m in metrics] for task in results]
    return tabulate(rows, headers=["proposals"] + metrics, tablefmt="pipe", disable_numparse=True)
