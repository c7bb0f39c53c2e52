"""Dataset mapper: detectron2's ``DatasetMapper`` plus what InstanceFCN needs of the data.

On top of the standard behaviour (read image, multi-scale ``ResizeShortestEdge`` + flip from
``INPUT.*``, annotations to ``Instances``) it

* keeps crowd regions as ``dataset_dict["crowd_boxes"]`` (detectron2 drops them) so that
  windows centred on a crowd are ignored, never negatives;
* drops degenerate polygons (< 3 points or zero area) and annotations left without a
  usable mask, with a warning, instead of failing deep inside ``PolygonMasks``;
* accepts RLE masks for ordinary objects (the image then uses ``BitMasks``);
* recomputes boxes from masks, since the positive-window rule reads box centres;
* in training, returns ``None`` for an unreadable image (detectron2's loader then draws
  another one and warns) so one corrupt file cannot end a long run; at test time it raises
  an error naming the file.
"""
import copy
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode, Boxes

__all__ = ["InstanceFCNDatasetMapper", "clean_annotations"]

logger = logging.getLogger(__name__)


def _polygon_area(poly: np.ndarray) -> float:
    xy = poly.reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def clean_annotations(annotations, file_name: str = ""):
    """Drop degenerate polygons and the annotations they leave without a mask.

    Returns ``(kept, dropped_count)``. RLE segmentations and annotations without a
    ``segmentation`` are kept as they are.
    """
    kept, dropped = [], 0
    for anno in annotations:
        segm = anno.get("segmentation")
        if isinstance(segm, list):
            polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in segm]
            polys = [p for p in polys if p.size >= 6 and p.size % 2 == 0 and _polygon_area(p) > 0]
            if not polys:
                dropped += 1
                continue
            anno = dict(anno, segmentation=[p.tolist() for p in polys])
        kept.append(anno)
    if dropped:
        logger.warning(
            f"{file_name}: dropped {dropped} annotation(s) whose polygons are all degenerate "
            "(fewer than 3 points or zero area)."
        )
    return kept, dropped


class InstanceFCNDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that keeps crowd regions and tolerates degenerate annotations."""

    @configurable
    def __init__(self, is_train: bool, **kwargs):
        kwargs["use_instance_mask"] = True
        super().__init__(is_train, **kwargs)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["use_instance_mask"] = True
        return ret

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos, _ = clean_annotations(dataset_dict.pop("annotations"), dataset_dict.get("file_name", ""))
        crowd = [a for a in annos if a.get("iscrowd", 0)]
        objects = [a for a in annos if not a.get("iscrowd", 0)]
        crowd_boxes = np.zeros((0, 4), dtype=np.float32)
        if crowd:
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in crowd], dtype=np.float32
            )
            crowd_boxes = transforms.apply_box(boxes).clip(min=0)
        dataset_dict["crowd_boxes"] = Boxes(torch.as_tensor(crowd_boxes, dtype=torch.float32))

        # A non-polygon (RLE) object mask anywhere in the image means BitMasks for all of them.
        mask_format = self.instance_mask_format
        if any(not isinstance(a.get("segmentation", []), list) for a in objects):
            mask_format = "bitmask"
        annos = [
            utils.transform_instance_annotations(a, transforms, image_shape) for a in objects
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
        if annos and instances.has("gt_masks"):
            # Boxes from the (transformed, clipped) masks: the window rule reads box centres.
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict):
        try:
            return super().__call__(copy.copy(dataset_dict))
        except (OSError, SyntaxError, ValueError) as e:
            # PIL raises OSError/UnidentifiedImageError (and SyntaxError for some broken
            # headers) on corrupt or truncated files; detectron2 raises SizeMismatchError
            # (a ValueError) when the file does not match the annotated height/width.
            msg = f"Cannot use image {dataset_dict.get('file_name')!r}: {type(e).__name__}: {e}"
            if self.is_train:
                logger.warning(msg + " -- skipping it.")
                return None
            raise ValueError(msg) from e
