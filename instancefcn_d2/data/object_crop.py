"""A training crop placed on an object: detectron2's ``RandomCrop`` whose window holds one object
drawn at random (``INPUT.CROP.AROUND_OBJECT``): the whole object when its box fits in the crop,
else its box centre.

A plain random crop of a sparse image (a few cells in a large field, a colony in one corner)
holds no object most of the time, and an iteration without a positive window teaches
objectness "background everywhere" and the mask branch nothing. Drawing the object first gives
every object the same chance to be trained on, whatever the image's emptiness; on dense images
it is close to a plain random crop. An image without objects gets the plain random crop.
Holding the drawn object whole (not only its centre, which leaves a crop twice the object's
side whole with probability 1/4) is what lets ``tools/plan_scales.py`` size such crops by the
object's window rather than by twice the object.
"""
import numpy as np

from detectron2.data import transforms as T
from detectron2.structures import BoxMode

__all__ = ["RandomCropAroundObject", "box_origin_range", "crop_origin_range", "object_boxes", "place_crop_on_objects", "set_crop_objects"]


def crop_origin_range(center: float, crop: int, size: int):
    """Integer origins ``o`` with ``0 <= o <= size - crop`` and ``o <= center < o + crop``, as
    ``(low, high)`` inclusive (``low > high``: none; the centre lies outside the image)."""
    return max(0, int(np.floor(center - crop)) + 1), min(size - crop, int(np.floor(center)))


def box_origin_range(low: float, high: float, crop: int, size: int):
    """Integer origins ``o`` with ``0 <= o <= size - crop`` and ``o <= low``, ``high <= o + crop``
    (the box ``[low, high]`` inside the crop), as ``(lo, hi)`` inclusive (``lo > hi``: none, the
    box is longer than the crop or leaves the image)."""
    return max(0, int(np.ceil(high - crop))), min(size - crop, int(np.floor(low)))


class RandomCropAroundObject(T.RandomCrop):
    """``RandomCrop(crop_type, crop_size)`` whose window holds a random object: its whole box
    where the box fits in the crop, else (on that axis) its box centre.

    detectron2's ``DatasetMapper`` passes an augmentation the image only, so the mapper sets
    :attr:`boxes` (``(N, 4)`` XYXY, the image's own coordinates) just before it runs; each data
    loader worker has its own mapper, so no two images share it. This must be the first
    augmentation (detectron2 puts the crop first), where boxes and image agree.
    """

    boxes = None

    def get_transform(self, image):
        h, w = image.shape[:2]
        ch, cw = self.get_crop_size((h, w))
        boxes = np.zeros((0, 4)) if self.boxes is None else np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if not len(boxes):
            return super().get_transform(image)
        x0, y0, x1, y1 = boxes[np.random.randint(len(boxes))]
        (ylo, yhi), (xlo, xhi) = box_origin_range(y0, y1, ch, h), box_origin_range(x0, x1, cw, w)
        if ylo > yhi:  # the box is taller than the crop: hold its centre
            ylo, yhi = crop_origin_range((y0 + y1) / 2, ch, h)
        if xlo > xhi:
            xlo, xhi = crop_origin_range((x0 + x1) / 2, cw, w)
        if ylo > yhi or xlo > xhi:  # a centre outside the image (an annotation beyond its edge)
            return super().get_transform(image)
        return T.CropTransform(np.random.randint(xlo, xhi + 1), np.random.randint(ylo, yhi + 1), cw, ch)


def place_crop_on_objects(cfg, augmentations):
    """With ``INPUT.CROP.AROUND_OBJECT``, replace detectron2's training ``RandomCrop`` (first
    in the list ``DatasetMapper.from_config`` builds) by :class:`RandomCropAroundObject`."""
    if cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.AROUND_OBJECT:
        assert isinstance(augmentations[0], T.RandomCrop), augmentations
        augmentations[0] = RandomCropAroundObject(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
    return augmentations


def set_crop_objects(augmentations, boxes):
    """Hand ``boxes()`` (``(N, 4)`` XYXY, image coordinates; called only when needed) to the
    object crop of a mapper's ``AugmentationList``, if it has one, just before the mapper runs it."""
    if augmentations.augs and isinstance(augmentations.augs[0], RandomCropAroundObject):
        augmentations.augs[0].boxes = boxes()


def object_boxes(annotations):
    """``(N, 4)`` XYXY boxes of the non-crowd objects of detectron2 annotation dicts."""
    return np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations
                     if not a.get("iscrowd", 0)], dtype=np.float64).reshape(-1, 4)
