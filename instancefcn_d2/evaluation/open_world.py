"""Open-world (cross-category) proposal AR: score on some categories, ignore the others.

Protocol (OLN, Kim et al. 2022; also LDET, GGN, UDOS): train on the "seen" categories, score
class-agnostic AR on the "unseen" ones. Ground truth of the categories not scored is *ignored*
with COCOeval's own semantics: a proposal matched to it is neither a hit nor a false positive,
and missing it is not a miss. Papers disagree on the top-N budget, so the rule is explicit:

* ``"oln"``: the top N proposals are cut first; proposals on ignored (seen) objects still use
  up the budget. This is what OLN's evaluation code does (``COCOEvalXclassWrapper`` slices
  ``dt[0:maxDet]`` before dropping the detections matched to the ignored split).
* ``"exclude_seen"``: a proposal whose IoU with an object of an ignored category is >= 0.5 is
  removed before the cut, so the top N are all spent elsewhere. IoU is the task's own: mask
  IoU for mask AR, box IoU for box AR (pycocotools ``maskUtils.iou``).
"""
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.cocoeval import COCOeval

__all__ = ["BUDGET_RULES", "CategorySubsetCOCOeval", "check_eval_category_ids", "drop_proposals_on_ignored"]

BUDGET_RULES = ("oln", "exclude_seen")


class CategorySubsetCOCOeval(COCOeval):
    """``COCOeval`` that also ignores every ground truth outside ``eval_category_ids``.

    ``COCOeval._prepare`` rebuilds ``gt["ignore"]`` from ``iscrowd`` alone (an ``ignore``
    field in the annotation file is overwritten), so the flag is set after it. Matching then
    treats these objects exactly like crowd-free ignore regions: a proposal prefers any
    scored object, a proposal on an ignored one is not a false positive, and an ignored
    object never counts as a miss. (The flag lands on ``cocoGt``'s annotation dicts; the next
    ``_prepare`` recomputes it.)
    """

    def __init__(self, cocoGt, cocoDt, iouType, eval_category_ids):
        super().__init__(cocoGt, cocoDt, iouType)
        self.eval_category_ids = frozenset(int(i) for i in eval_category_ids)

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                if g["category_id"] not in self.eval_category_ids:
                    g["ignore"] = 1


def check_eval_category_ids(coco_gt, eval_category_ids, dataset_name=""):
    """Raise ``ValueError`` unless every id is a category of ``coco_gt``."""
    known = {c["id"]: c.get("name", "") for c in coco_gt.dataset.get("categories", [])}
    unknown = sorted(set(int(i) for i in eval_category_ids) - set(known))
    if unknown:
        raise ValueError(
            f"eval_category_ids (TEST.PROPOSAL_EVAL_CATEGORY_IDS) {unknown} are not categories of "
            f"{dataset_name!r} (ids as in its annotation file; known: {dict(sorted(known.items()))})."
        )


def drop_proposals_on_ignored(coco_gt, coco_results, eval_category_ids, iou_type, iou_thresh=0.5):
    """``coco_results`` without the proposals whose IoU with a ground-truth object of a category
    outside ``eval_category_ids`` is >= ``iou_thresh`` (the ``"exclude_seen"`` rule).

    ``iou_type`` "segm" compares ``segmentation`` RLEs, "bbox" compares ``bbox`` [x, y, w, h].
    Returns a new list; order is kept.
    """
    keep_cats = frozenset(int(i) for i in eval_category_ids)
    ignored = defaultdict(list)  # image id -> RLEs or boxes of ignored-category objects
    for ann in coco_gt.dataset.get("annotations", []):
        if ann["category_id"] not in keep_cats:
            ignored[ann["image_id"]].append(coco_gt.annToRLE(ann) if iou_type == "segm" else ann["bbox"])
    field = "segmentation" if iou_type == "segm" else "bbox"
    by_image = defaultdict(list)
    for i, r in enumerate(coco_results):
        by_image[r["image_id"]].append(i)
    drop = np.zeros(len(coco_results), dtype=bool)
    for image_id, idx in by_image.items():
        objects = ignored.get(image_id)
        if not objects:
            continue
        # (D, G) IoU, plain (not crowd-style) for every ignored object.
        ious = np.asarray(mask_util.iou([coco_results[i][field] for i in idx], objects, [0] * len(objects)))
        drop[idx] = ious.reshape(len(idx), len(objects)).max(axis=1) >= iou_thresh
    return [r for r, d in zip(coco_results, drop) if not d]
