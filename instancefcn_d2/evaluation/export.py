"""Plain converters and writers for class-agnostic segment proposals.

Two on-disk formats leave the model:

* COCO results JSON: one dict per proposal, ``{"image_id", "category_id": 1, "segmentation":
  compressed RLE (``counts`` as str), "score", "bbox": [x, y, w, h]}``; readable by
  ``COCO.loadRes``.
* Detectron2 precomputed-proposal pickle: ``{"ids", "boxes", "objectness_logits", "bbox_mode"}``
  as read by ``detectron2.data.load_proposals_into_dataset`` (``MODEL.LOAD_PROPOSALS``).

Nothing here needs a process group or a dataset registry, so tools can reuse it.
"""
import json
import pickle

import numpy as np
import pycocotools.mask as mask_util
import torch

from ..fileio import atomic_write
from ..mask_rendering import proposal_rles

__all__ = [
    "PROPOSAL_CATEGORY_ID",
    "to_numpy",
    "instances_to_coco_results",
    "instances_to_proposal_record",
    "write_coco_results",
    "write_proposal_pickle",
]

# Proposals are class-agnostic; COCO results still need a category, and scoring uses useCats=0.
PROPOSAL_CATEGORY_ID = 1

# detectron2's BoxMode.XYXY_ABS is IntEnum value 0. Stored as a plain int so the pickle can be
# unpickled without detectron2; load_proposals_into_dataset calls BoxMode(value) on it, and
# ``0 == BoxMode.XYXY_ABS`` holds.
_XYXY_ABS = 0


def to_numpy(x, dtype=None):
    """A tensor (any device) or array-like as a numpy array (of ``dtype`` when given)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _image_id(image_id):
    """A dataset ``image_id`` as stored: numpy / tensor integers as Python ints (JSON, pickle)."""
    return int(image_id) if isinstance(image_id, (np.integer, torch.Tensor)) else image_id


def _xyxy_to_xywh(boxes):
    """(N, 4) XYXY -> (N, 4) float64 XYWH (float64 so w = x2 - x1 adds no float32 rounding)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def instances_to_coco_results(instances, image_id, mask_threshold=0.5):
    """Convert one image's predictions into COCO result dicts.

    Args:
        instances (Instances): in original image coordinates, with masks in any of the model's
            formats (``pred_masks`` (N, H, W) bool, ``pred_masks_rle``, or ROI ``pred_masks``
            (N, 1, m, m) + ``pred_mask_boxes``; see ``instancefcn_d2.mask_rendering``),
            ``scores`` (N,) and, optionally, ``pred_boxes`` (Boxes, XYXY_ABS, N x 4).
            Without ``pred_boxes`` the masks' tight boxes are used; without masks (box
            proposals) the dicts have no "segmentation".
        image_id (int): the dataset's ``image_id`` of this image.
        mask_threshold (float): binarises ROI probabilities (the model's ``MASK_THRESHOLD``).

    Returns:
        list[dict]: N dicts ``{"image_id", "category_id", "segmentation" (RLE, str counts),
        "score", "bbox" (XYWH)}``; ``[]`` when N == 0.
    """
    num = len(instances)
    if num == 0:
        return []
    scores = to_numpy(instances.scores, np.float64).reshape(-1).tolist()
    has_masks = instances.has("pred_masks") or instances.has("pred_masks_rle")
    if not has_masks and not instances.has("pred_boxes"):
        raise ValueError("instances carry neither masks (pred_masks, pred_masks_rle) nor pred_boxes")
    rles = proposal_rles(instances, mask_threshold) if has_masks else None
    if instances.has("pred_boxes"):
        boxes = _xyxy_to_xywh(to_numpy(instances.pred_boxes.tensor, np.float64)).tolist()
    else:
        boxes = mask_util.toBbox(rles).tolist()
    image_id = _image_id(image_id)
    results = [
        {"image_id": image_id, "category_id": PROPOSAL_CATEGORY_ID, "score": score, "bbox": box}
        for score, box in zip(scores, boxes)
    ]
    for r, rle in zip(results, rles or ()):  # box proposals (no masks) have no "segmentation"
        r["segmentation"] = rle
    return results


def instances_to_proposal_record(instances, image_id):
    """One image's predictions -> ``(image_id, boxes (N, 4) float32 XYXY, logits (N,) float32)``.

    The logits are those of ``scores`` (the ranking score: objectness, or objectness x maskness,
    decayed by Matrix NMS), so that detectron2's loader, which re-sorts proposals by
    ``objectness_logits`` and keeps the first ``PRECOMPUTED_PROPOSAL_TOPK_*``, keeps this ranking;
    with ``SCORE "objectness"`` and box NMS they are the objectness logits. Without ``scores``,
    ``objectness_logits``.
    """
    image_id = _image_id(image_id)
    if len(instances) == 0:
        return image_id, np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    if instances.has("pred_boxes"):
        boxes = to_numpy(instances.pred_boxes.tensor, np.float32).reshape(-1, 4)
    else:
        rles = proposal_rles(instances)
        boxes = mask_util.toBbox(rles).astype(np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
    if instances.has("scores"):
        p = to_numpy(instances.scores, np.float64).reshape(-1).clip(1e-300, 1 - 1e-16)  # float64: logits to ~36
        logits = (np.log(p) - np.log1p(-p)).astype(np.float32)
    else:
        logits = to_numpy(instances.objectness_logits, np.float32).reshape(-1)
    return image_id, boxes, logits


def write_coco_results(results, path):
    """Write COCO result dicts (from :func:`instances_to_coco_results`) as a JSON list."""
    atomic_write(path, lambda f: json.dump(list(results), f), "w")


def write_proposal_pickle(records, path):
    """Write a Detectron2 precomputed-proposal pickle.

    Args:
        records: iterable of ``(image_id, boxes (N, 4) XYXY_ABS, objectness_logits (N,))``, in
            the order to store; N may be 0 (images without proposals must still be listed,
            ``load_proposals_into_dataset`` looks every dataset image up).
        path (str): destination ``.pkl``.
    """
    ids, boxes, logits = [], [], []
    for image_id, b, s in records:
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
        s = np.asarray(s, dtype=np.float32).reshape(-1)
        if len(b) != len(s):
            raise ValueError(f"image {image_id}: {len(b)} boxes but {len(s)} objectness logits")
        ids.append(_image_id(image_id))
        boxes.append(b)
        logits.append(s)
    data = {"ids": ids, "boxes": boxes, "objectness_logits": logits, "bbox_mode": _XYXY_ABS}
    atomic_write(path, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL))
