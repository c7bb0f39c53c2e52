"""Recall per feature level: does each level of a feature pyramid contribute proposals?

A pyramid's levels share the two branches and compete on one objectness ranking, so a level
can be starved in training (few sampled windows) or crowded out at inference without the
overall AR showing it. For each level this scores that level's proposals alone (each image's
proposals from the level, in their ranking order) with the same class-agnostic ``COCOeval``
as the overall AR, at the largest proposal budget: a level whose AR is near zero finds
nothing on its own; the overall AR says how the levels combine.
"""
from collections import OrderedDict

from .recall import proposal_recall, run_proposal_cocoeval

__all__ = ["level_recall"]


def level_recall(coco_gt, coco_results, levels, img_ids, max_det, iou_type, eval_category_ids=None):
    """``{"AR@{max_det}_level{l}": AR (%) or None}`` for every level ``l`` in ``levels``.

    Args:
        coco_results: COCO result dicts of all images (as scored for the overall AR).
        levels: the feature level (index into the model's ``IN_FEATURES``) of each result.
        iou_type: ``"segm"`` or ``"bbox"``.
    """
    if len(levels) != len(coco_results):
        raise ValueError(f"{len(levels)} levels for {len(coco_results)} proposals")
    out = OrderedDict()
    for level in sorted(set(levels)):
        mine = [r for r, l in zip(coco_results, levels) if l == level]
        cocoeval = run_proposal_cocoeval(coco_gt, mine, iou_type, img_ids, [max_det], eval_category_ids)
        out[f"AR@{max_det}_level{level}"] = proposal_recall(cocoeval, [max_det])[f"AR@{max_det}"]
    return out
