"""Class-agnostic average recall (AR) of segment and box proposals, scored as in the paper.

pycocotools ``COCOeval`` with ``useCats = 0``, IoU 0.50:0.05:0.95, ``maxDets = max_dets`` and the
COCO small/medium/large area ranges; crowd regions are ignored by COCO's own matcher.
With ``eval_category_ids`` only those categories are scored (open-world proposals; see
:mod:`.open_world` for the ignore semantics and the top-N budget rules).
Detectron2's ``COCOEvaluator`` cannot do this: it scores box proposals only, with its own matcher.
"""
import contextlib
import copy
import io
import itertools
import logging
import os

import pycocotools.mask as mask_util
from pycocotools.coco import COCO

import detectron2.utils.comm as comm
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode, PolygonMasks
from detectron2.utils.file_io import PathManager

from .level_recall import level_recall
from .open_world import BUDGET_RULES, check_eval_category_ids
from .recall import _all_have_segmentation, format_ar_table, proposal_recall, run_proposal_cocoeval, score_proposals
from .export import (
    PROPOSAL_CATEGORY_ID,
    instances_to_coco_results,
    instances_to_proposal_record,
    write_coco_results,
    write_proposal_pickle,
)

__all__ = [
    "SegmentProposalEvaluator",
    "format_ar_table",
    "load_coco_gt",
    "proposal_recall",
    "run_proposal_cocoeval",
    "score_proposals",
]

logger = logging.getLogger(__name__)

COCO_RESULTS_FILE = "segment_proposals_coco.json"
PROPOSAL_PICKLE_FILE = "box_proposals.pkl"

# (evaluator result key, pycocotools iouType)


class SegmentProposalEvaluator(DatasetEvaluator):
    """Class-agnostic AR@N of segment proposals (mask IoU) and of their boxes (box IoU).

    Consumes ``outputs[i]["instances"]`` in original image coordinates with masks in any of the
    model's formats (``MODEL.INSTANCEFCN.MASK_FORMAT``: ``pred_masks`` (N, H, W) bool,
    ``pred_masks_rle``, or ROI ``pred_masks`` (N, 1, m, m) + ``pred_mask_boxes``), ``pred_boxes``
    (N x 4 XYXY_ABS), ``scores`` (N,) and ``objectness_logits`` (N,). Each image's masks become
    RLEs as they arrive (ROI masks are pasted then, on their device), so the AR is the same
    whatever the format. Mask-less outputs are scored as boxes only (no ``segm_proposals``):
    ``instances`` without masks (detectron2's Fast/Faster R-CNN), or ``outputs[i]["proposals"]``
    (``proposal_boxes``, ``objectness_logits``: detectron2's ``ProposalNetwork``, RPN alone).

    ``evaluate()`` returns, in percent::

        {"segm_proposals": {"AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"},
         "box_proposals": {...same keys...},
         "segm_proposals_per_level": {"AR@1000_level0", "AR@1000_level1", ...},
         "box_proposals_per_level": {...}}

The ``*_per_level`` entries (:mod:`.level_recall`) appear when the proposals carry ``levels``
from more than one feature level (a feature pyramid): the AR of each level's proposals alone,
so a level that contributes nothing shows up.

    A metric is None (``null`` in JSON, "–" in the table) when the evaluated images hold no
    (non-crowd, scored) ground truth in that area range: recall is undefined there, not zero, and a
    NaN would print as ``nan`` and be written as the invalid JSON token ``NaN``.
    With ``output_dir``, also writes ``segment_proposals_coco.json`` (COCO results, RLE masks)
    and ``box_proposals.pkl`` (Detectron2 precomputed proposals, for ``MODEL.LOAD_PROPOSALS``).
    """

    def __init__(self, dataset_name, output_dir=None, max_dets=(10, 100, 1000), distributed=True,
                 eval_category_ids=None, budget_rule="oln", mask_threshold=0.5):
        """
        Args:
            dataset_name (str): a dataset registered in ``DatasetCatalog``; its ground truth comes
                from ``MetadataCatalog.get(dataset_name).json_file`` when set, else from its
                dataset dicts (polygon or RLE masks).
            output_dir (str or None): where to write the proposal files; None writes nothing.
            max_dets (sequence[int]): the N of AR@N; area-split AR uses the largest.
            distributed (bool): gather predictions from all ranks and evaluate on rank 0.
            eval_category_ids (iterable[int] or None): score only the ground truth of these
                categories (ids as in the COCO ground truth); the others' is ignored (neither
                hits nor misses). None or empty scores every category.
            budget_rule (str): with ``eval_category_ids``, "oln" (top N cut first: proposals
                on ignored objects use up the budget, as OLN's code) or "exclude_seen"
                (proposals at IoU >= 0.5 with an ignored object are removed before the cut).
            mask_threshold (float): binarises ROI-format mask probabilities; pass the model's
                ``MODEL.INSTANCEFCN.MASK_THRESHOLD``.
        """
        if budget_rule not in BUDGET_RULES:
            raise ValueError(f"budget_rule must be one of {BUDGET_RULES}, got {budget_rule!r}")
        self._eval_category_ids = sorted({int(i) for i in eval_category_ids}) if eval_category_ids else None
        self._budget_rule = budget_rule
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._mask_threshold = mask_threshold
        # COCOeval truncates detections at maxDets[-1] and slices the first maxDet of each image
        # for every entry, so the list must be ascending and unique.
        max_dets = sorted({int(m) for m in max_dets})
        if not max_dets or max_dets[0] < 1:
            raise ValueError(f"max_dets must be positive integers, got {max_dets}")
        self._max_dets = max_dets
        self._coco_gt = None  # built lazily, on the main process only
        self.reset()

    def reset(self):
        # One entry per image: compact RLE results + proposal boxes; never dense masks.
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            image_id = inp["image_id"]
            # any device: the converters copy only what they keep
            instances = out["instances"] if "instances" in out else _proposals_as_instances(out["proposals"])
            _, boxes, logits = instances_to_proposal_record(instances, image_id)
            self._predictions.append(
                {
                    "image_id": image_id,
                    "coco_results": instances_to_coco_results(instances, image_id, self._mask_threshold),
                    "boxes": boxes,
                    "objectness_logits": logits,
                    # feature level of each result (same order), for the per-level recall
                    "levels": instances.levels.tolist() if instances.has("levels") else None,
                }
            )

    def _gathered_predictions(self):
        """All ranks' per-image predictions on the main process; None elsewhere."""
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*gathered))

    def evaluate(self):
        predictions = self._gathered_predictions()
        if predictions is None:
            return {}
        if len(predictions) == 0:
            logger.warning("[SegmentProposalEvaluator] did not receive any image to evaluate.")
            return {}

        coco_results = list(itertools.chain(*(p["coco_results"] for p in predictions)))
        if self._output_dir:
            self._write_outputs(predictions, coco_results)

        if self._coco_gt is None:
            self._coco_gt = load_coco_gt(self._dataset_name)
        if "annotations" not in self._coco_gt.dataset:
            logger.warning(
                f"[SegmentProposalEvaluator] '{self._dataset_name}' has no annotations; "
                "proposals were not scored."
            )
            return {}

        if self._eval_category_ids is not None:
            check_eval_category_ids(self._coco_gt, self._eval_category_ids, self._dataset_name)
        img_ids = [p["image_id"] for p in predictions]
        unknown = set(img_ids) - set(self._coco_gt.getImgIds())
        if unknown:
            raise ValueError(
                f"image ids {sorted(unknown)[:10]} are not in the ground truth of "
                f"'{self._dataset_name}'"
            )

        if not _all_have_segmentation(self._coco_gt, img_ids):
            logger.warning(
                f"[SegmentProposalEvaluator] '{self._dataset_name}' has annotations without "
                "masks; skipping mask AR."
            )
        results = score_proposals(
            self._coco_gt, coco_results, img_ids, self._max_dets, self._eval_category_ids, self._budget_rule
        )
        results.update(self._per_level(predictions, coco_results, img_ids, list(results)))
        logger.info(
            f"Class-agnostic proposal AR (%) on '{self._dataset_name}', "
            f"{len(img_ids)} images, {len(coco_results)} proposals{self._describe_categories()}:\n"
            + format_ar_table(results)
        )
        if any(v is None for task in results.values() for v in task.values()):
            logger.info(
                "[SegmentProposalEvaluator] '–' / null: the evaluated images have no non-crowd "
                "ground truth in that area range, so recall there is undefined (not zero)."
            )
        return results

    def _per_level(self, predictions, coco_results, img_ids, tasks):
        """``{"segm_proposals_per_level": ..., "box_proposals_per_level": ...}`` (see the
        class doc); empty unless every image's proposals carry ``levels`` and two levels occur."""
        if any(p["levels"] is None for p in predictions):
            return {}
        levels = [l for p in predictions for l in p["levels"]]
        if len(set(levels)) < 2:
            return {}
        out = {}
        for task, iou_type in (("segm_proposals", "segm"), ("box_proposals", "bbox")):
            if task in tasks:
                out[f"{task}_per_level"] = level_recall(self._coco_gt, coco_results, levels, img_ids,
                                                        max(self._max_dets), iou_type, self._eval_category_ids)
        logger.info("AR (%) of each feature level's proposals alone:\n" + format_ar_table(out))
        return out

    def _describe_categories(self):
        if self._eval_category_ids is None:
            return ""
        names = {c["id"]: c.get("name", "") for c in self._coco_gt.dataset.get("categories", [])}
        listed = ", ".join(f"{i} {names.get(i, '')}".strip() for i in self._eval_category_ids)
        return (f"; scored categories ({len(self._eval_category_ids)} of {len(names)}): {listed}; "
                f"other categories ignored; top-N budget rule '{self._budget_rule}'")

    def _write_outputs(self, predictions, coco_results):
        PathManager.mkdirs(self._output_dir)
        json_path = os.path.join(self._output_dir, COCO_RESULTS_FILE)
        pkl_path = os.path.join(self._output_dir, PROPOSAL_PICKLE_FILE)
        write_coco_results(coco_results, json_path)
        write_proposal_pickle(
            ((p["image_id"], p["boxes"], p["objectness_logits"]) for p in predictions), pkl_path
        )
        logger.info(f"Saved segment proposals to {json_path} and box proposals to {pkl_path}")


def _proposals_as_instances(proposals):
    """A ``ProposalNetwork`` output (``proposal_boxes``, ``objectness_logits``, original image
    frame) as box-only ``Instances``: ``pred_boxes``, ``scores`` = sigmoid(logits), which orders
    them as the logits do, and ``objectness_logits``."""
    from detectron2.structures import Instances

    logits = proposals.objectness_logits
    return Instances(proposals.image_size, pred_boxes=proposals.proposal_boxes,
                     scores=logits.sigmoid(), objectness_logits=logits)


def load_coco_gt(dataset_name):
    """A pycocotools ``COCO`` holding the ground truth of a registered dataset.

    Reads ``MetadataCatalog.get(dataset_name).json_file`` when set (as detectron2's COCOEvaluator
    does); otherwise converts the dataset dicts in memory (``convert_to_coco_dict`` when the
    metadata has ``thing_classes``, else a minimal class-agnostic conversion).
    """
    meta = MetadataCatalog.get(dataset_name)
    if hasattr(meta, "json_file"):
        json_file = PathManager.get_local_path(meta.json_file)
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(json_file)
    else:
        if hasattr(meta, "thing_classes"):
            dataset = convert_to_coco_dict(dataset_name)
        else:
            dataset = _class_agnostic_coco_dict(DatasetCatalog.get(dataset_name))
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    if _sanitize_gt(coco.dataset):
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    return coco


def _class_agnostic_coco_dict(dataset_dicts):
    """Dataset dicts -> COCO dict with every annotation in category 1 (no metadata needed)."""
    images, annotations = [], []
    for idx, record in enumerate(dataset_dicts):
        image_id = record.get("image_id", idx)
        height, width = int(record["height"]), int(record["width"])
        images.append(
            {"id": image_id, "width": width, "height": height,
             "file_name": str(record.get("file_name", ""))}
        )
        for ann in record.get("annotations", []):
            bbox = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
            coco_ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "bbox": [float(x) for x in bbox],
                "iscrowd": int(ann.get("iscrowd", 0)),
                "category_id": PROPOSAL_CATEGORY_ID,
            }
            if "segmentation" in ann:
                seg = copy.copy(ann["segmentation"])
                if isinstance(seg, dict) and isinstance(seg["counts"], bytes):
                    seg["counts"] = seg["counts"].decode("ascii")  # JSON-able, as upstream does
                coco_ann["segmentation"] = seg
            coco_ann["area"] = _annotation_area(coco_ann)
            annotations.append(coco_ann)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": PROPOSAL_CATEGORY_ID, "name": "object"}],
    }


def _annotation_area(ann):
    """COCO "area" of an annotation, computed as detectron2's convert_to_coco_dict does
    (polygon: shoelace area; RLE: pixel count; no mask: box area), so both routes agree."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        return float(PolygonMasks([seg]).area()[0].item())
    if isinstance(seg, dict):
        if isinstance(seg["counts"], list):  # uncompressed RLE
            seg = mask_util.frPyObjects(seg, *seg["size"])
        return float(mask_util.area(seg))
    return float(ann["bbox"][2] * ann["bbox"][3])


def _sanitize_gt(dataset):
    """Fill what COCOeval needs but some annotation files omit. Returns True when it changed."""
    changed = False
    if "categories" not in dataset:  # loadRes copies it
        dataset["categories"] = [{"id": PROPOSAL_CATEGORY_ID, "name": "object"}]
        changed = True
    anns = dataset.get("annotations")
    if not anns:
        return changed
    # COCOeval stores matched gt ids in a zero-initialised array, so a gt with id 0 would
    # count as unmatched; ids must also be unique. Renumbering changes no metric.
    ids = [a.get("id") for a in anns]
    if any(i is None or i == 0 for i in ids) or len(set(ids)) != len(ids):
        for i, a in enumerate(anns):
            a["id"] = i + 1
        changed = True
    for a in anns:
        if "iscrowd" not in a:
            a["iscrowd"] = 0
            changed = True
        if "area" not in a:
            a["area"] = _annotation_area(a)
            changed = True
    return changed
