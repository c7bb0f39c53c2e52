"""Label images (one integer id per object, 0 = background; the form microscopy segmentations
come in) to COCO instances: one annotation per label id per frame, its mask as COCO RLE
(pycocotools), its box and area from the mask. And the 8-bit stretch of 16-bit images.
"""
from typing import Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

__all__ = ["percentile_stretch", "label_image_annotations", "label_frames_to_coco"]


def percentile_stretch(frames: np.ndarray, low: float = 0.5, high: float = 99.5) -> Tuple[np.ndarray, Tuple[float, float]]:
    """``(T, H, W)`` any dtype -> ``(T, H, W)`` uint8: the ``low`` / ``high`` percentiles of the
    whole sequence map to 0 / 255 (linear, clipped). One pair for the sequence, so that a
    frame's brightness is comparable across frames. Returns the frames and ``(lo, hi)``."""
    frames = np.asarray(frames)
    lo, hi = (float(v) for v in np.percentile(frames, [low, high]))
    if hi <= lo:
        raise ValueError(f"percentiles {low} / {high} are equal ({lo}): a constant sequence cannot be stretched")
    out = np.clip((frames.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
    return np.rint(out).astype(np.uint8), (lo, hi)


def label_image_annotations(labels: np.ndarray, image_id: int, first_id: int = 1, category_id: int = 1) -> list:
    """COCO annotations of one ``(H, W)`` label image: one per nonzero label id, ascending.

    ``segmentation``: RLE (``counts`` as str, JSON-ready); ``bbox``: XYWH of the mask's tight
    box; ``area``: mask pixels; ids ``first_id, first_id + 1, ...``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label image is (H, W); got shape {labels.shape}")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    anns = []
    for k, lab in enumerate(ids):
        rle = mask_util.encode(np.asfortranarray((labels == lab).astype(np.uint8)))
        anns.append({
            "id": first_id + k, "image_id": int(image_id), "category_id": int(category_id), "iscrowd": 0,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_util.area(rle)), "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "label_id": int(lab),  # the object's id in the source label image
        })
    return anns


def label_frames_to_coco(labels: Sequence[np.ndarray], file_names: Sequence[str], image_ids: Sequence[int],
                         category: str, info: dict) -> dict:
    """A COCO instances dict of label frames: image ``i`` is ``file_names[i]`` (its size from
    ``labels[i]``), with ``image_ids[i]`` and one annotation per label id."""
    if not len(labels) == len(file_names) == len(image_ids):
        raise ValueError(f"{len(labels)} label frames, {len(file_names)} file names, {len(image_ids)} ids")
    images, annotations = [], []
    for lab, name, image_id in zip(labels, file_names, image_ids):
        h, w = np.asarray(lab).shape
        images.append({"id": int(image_id), "file_name": name, "height": int(h), "width": int(w)})
        annotations += label_image_annotations(lab, image_id, first_id=len(annotations) + 1)
    return {"info": info, "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category}]}
