"""Dataset mapper: detectron2's ``DatasetMapper`` plus what InstanceFCN needs of the data.

On top of the standard behaviour (read image, multi-scale ``ResizeShortestEdge`` + flip from
``INPUT.*``, annotations to ``Instances``) it

* keeps crowd regions as ``dataset_dict["crowd_boxes"]`` (detectron2 drops them) so that
  windows centred on a crowd are ignored, never negatives;
* drops degenerate polygons (< 3 points or zero area), RLE masks whose size is not the
  image's, and annotations left without a usable mask, with a warning, instead of failing
  deep inside ``PolygonMasks``; objects without any ``segmentation`` become ignore regions
  (like crowds), since InstanceFCN cannot learn from a box alone;
* accepts RLE masks (compressed or not) for ordinary objects (the image then uses ``BitMasks``);
* recomputes boxes from masks, clipped to the image, since the positive-window rule reads
  box centres; objects entirely outside the image are dropped;
* in training with ``train_category_ids`` (``DATASETS.TRAIN_CATEGORY_IDS``, open-world
  proposals), drops the annotations of the other categories, which leaves those objects
  unlabelled background as in OLN's protocol, or with ``unseen_as="ignore"`` turns them into
  ignore regions (like crowds: windows centred in their boxes are neither positive nor negative);
* in training with ``INPUT.CROP.AROUND_OBJECT``, places the crop on a random object
  (:class:`~.object_crop.RandomCropAroundObject`) instead of anywhere in the image;
* in training, returns ``None`` for an unreadable image or unusable annotations (detectron2's
  loader then draws another image and the mapper warns) so one corrupt file cannot end a long
  run; at test time it raises an error naming the file.
"""
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode, Boxes
from detectron2.structures.masks import polygon_area
from pycocotools import mask as mask_util

from .categories import UNSEEN_AS, contiguous_category_ids
from .object_crop import object_boxes, place_crop_on_objects, set_crop_objects

__all__ = ["InstanceFCNDatasetMapper", "clean_annotations", "has_rle_object_masks"]

logger = logging.getLogger(__name__)


def clean_annotations(annotations, file_name: str = "", image_size=None):
    """Drop degenerate polygons and the annotations they leave without a mask.

    Returns ``(kept, dropped_count)``. Uncompressed RLE is compressed; with ``image_size``
    ``(height, width)``, object RLE masks of another size are dropped. A non-crowd annotation
    without a ``segmentation`` is kept as an ignore region (``iscrowd=1``).
    """
    kept, dropped, wrong_size, no_mask = [], 0, 0, 0
    for anno in annotations:
        segm = anno.get("segmentation")
        if isinstance(segm, list):
            polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in segm]
            polys = [p for p in polys if p.size >= 6 and p.size % 2 == 0 and polygon_area(p[0::2], p[1::2]) > 0]
            if not polys:
                dropped += 1
                continue
            anno = dict(anno, segmentation=[p.tolist() for p in polys])
        elif isinstance(segm, dict):
            size = tuple(int(v) for v in segm.get("size", ()))
            if image_size is not None and size != tuple(image_size) and not anno.get("iscrowd", 0):
                wrong_size += 1  # (a crowd region only contributes its box)
                continue
            if isinstance(segm.get("counts"), list):  # uncompressed RLE
                anno = dict(anno, segmentation=mask_util.frPyObjects(segm, *size))
        elif segm is None and not anno.get("iscrowd", 0):
            no_mask += 1
            anno = dict(anno, iscrowd=1)
        kept.append(anno)
    if dropped:
        logger.warning(
            f"{file_name}: dropped {dropped} annotation(s) whose polygons are all degenerate "
            "(fewer than 3 points or zero area)."
        )
    if wrong_size:
        logger.warning(
            f"{file_name}: dropped {wrong_size} annotation(s) whose RLE mask size is not the "
            f"image's {tuple(image_size)}."
        )
    if no_mask:
        logger.warning(
            f"{file_name}: {no_mask} annotation(s) have no 'segmentation'; their boxes are used "
            "as ignore regions (like crowds)."
        )
    return kept, dropped + wrong_size


def has_rle_object_masks(annotations) -> bool:
    """Whether an object (not a crowd) has an RLE mask: the image then needs ``BitMasks`` for
    all its objects (``PolygonMasks`` cannot hold RLE)."""
    return any(isinstance(a.get("segmentation"), dict) and not a.get("iscrowd", 0) for a in annotations)


class _BadAnnotations(ValueError):
    pass


class InstanceFCNDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that keeps crowd regions and tolerates degenerate annotations."""

    @configurable
    def __init__(self, is_train: bool, *, train_category_ids=None, unseen_as: str = "background", **kwargs):
        """
        Args:
            train_category_ids (iterable[int] or None): in training, keep only annotations of
                these categories (ids as in the dataset dicts, i.e. contiguous ids for COCO
                JSON datasets); None keeps all. Ignored at test time.
            unseen_as (str): what the other categories' annotations become: "background"
                (dropped) or "ignore" (ignore regions, like crowds).
            kwargs: as for detectron2's ``DatasetMapper``.
        """
        if unseen_as not in UNSEEN_AS:
            raise ValueError(f"unseen_as (DATASETS.TRAIN_UNSEEN_AS) must be one of {UNSEEN_AS}, got {unseen_as!r}")
        kwargs["use_instance_mask"] = True  # whatever the config says: masks are the targets
        super().__init__(is_train, **kwargs)
        self.train_category_ids = None if train_category_ids is None else frozenset(int(i) for i in train_category_ids)
        self.unseen_as = unseen_as

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["unseen_as"] = cfg.DATASETS.TRAIN_UNSEEN_AS
        if is_train:
            ret["train_category_ids"] = contiguous_category_ids(cfg.DATASETS.TRAIN, cfg.DATASETS.TRAIN_CATEGORY_IDS)
            place_crop_on_objects(cfg, ret["augmentations"])
        return ret

    def _object_boxes(self, dataset_dict):
        """``(N, 4)`` XYXY boxes of the objects this mapper trains on (not crowds), image coordinates."""
        return object_boxes(self._select_categories(dataset_dict.get("annotations", ())))

    def _select_categories(self, annos):
        """Drop, or turn into ignore regions, the annotations of categories not trained on."""
        if not self.is_train or self.train_category_ids is None:
            return annos
        seen = [a for a in annos if a.get("category_id") in self.train_category_ids]
        if self.unseen_as == "background":
            return seen
        return seen + [dict(a, iscrowd=1) for a in annos if a.get("category_id") not in self.train_category_ids]

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        try:
            self._transform_annotations_checked(dataset_dict, transforms, image_shape)
        except Exception as e:
            # One malformed annotation must not end a training run: the caller skips the image.
            raise _BadAnnotations(f"{type(e).__name__}: {e}") from e

    def _transform_annotations_checked(self, dataset_dict, transforms, image_shape):
        size = (dataset_dict["height"], dataset_dict["width"]) if "height" in dataset_dict else None
        annos = self._select_categories(dataset_dict.pop("annotations"))
        annos, _ = clean_annotations(annos, dataset_dict.get("file_name", ""), size)
        crowd = [a for a in annos if a.get("iscrowd", 0)]
        objects = [a for a in annos if not a.get("iscrowd", 0)]
        crowd_boxes = np.zeros((0, 4), dtype=np.float32)
        if crowd:
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in crowd], dtype=np.float32
            )
            crowd_boxes = transforms.apply_box(boxes)
            crowd_boxes[:, 0::2] = crowd_boxes[:, 0::2].clip(0, image_shape[1])
            crowd_boxes[:, 1::2] = crowd_boxes[:, 1::2].clip(0, image_shape[0])
        dataset_dict["crowd_boxes"] = Boxes(torch.as_tensor(crowd_boxes, dtype=torch.float32))

        # A non-polygon (RLE) object mask anywhere in the image means BitMasks for all of them.
        mask_format = "bitmask" if has_rle_object_masks(objects) else self.instance_mask_format
        annos = [
            utils.transform_instance_annotations(a, transforms, image_shape) for a in objects
        ]
        # A crop (INPUT.CROP) leaves objects outside it with no polygon at all, whose box would
        # be infinite: they are simply not in this input.
        annos = [a for a in annos if not (isinstance(a.get("segmentation"), list) and not a["segmentation"])]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
        if annos and instances.has("gt_masks"):
            # Boxes from the (transformed) masks, clipped to the image: the window rule reads
            # the centres of the visible parts; objects entirely outside become empty boxes.
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
            instances.gt_boxes.clip(image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)

    def __call__(self, dataset_dict):
        if self.is_train:
            set_crop_objects(self.augmentations, lambda: self._object_boxes(dataset_dict))
        try:
            return super().__call__(dataset_dict)  # it deep-copies before changing anything
        except (OSError, SyntaxError, ValueError) as e:
            # PIL raises OSError/UnidentifiedImageError (and SyntaxError for some broken
            # headers) on corrupt or truncated files; detectron2 raises SizeMismatchError
            # (a ValueError) when the file does not match the annotated height/width;
            # _BadAnnotations (a ValueError) wraps any failure on the image's annotations.
            what = "the annotations of image" if isinstance(e, _BadAnnotations) else "image"
            why = str(e) if isinstance(e, _BadAnnotations) else f"{type(e).__name__}: {e}"
            msg = f"Cannot use {what} {dataset_dict.get('file_name')!r}: {why}"
            if self.is_train:
                logger.warning(msg + " -- skipping it.")
                return None
            raise ValueError(msg) from e
