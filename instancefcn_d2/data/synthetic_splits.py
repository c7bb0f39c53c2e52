"""The synthetic splits on disk: :func:`generate_split` writes the images that
:mod:`.synthetic` renders and their COCO JSON; :func:`ensure_dataset` keeps a manifest so that
a split is regenerated only when its files are missing or were made with other parameters;
:func:`summarize_split` counts what a written split holds.
"""
import hashlib
import json
import logging
import os
import shutil

import cv2
import numpy as np
from pycocotools import mask as mask_util

from ..fileio import atomic_write
# The generator's internals: this module is its only writer.
from .synthetic import CATEGORIES, GENERATOR_VERSION, _image_kinds, _params, _polygons, _render_image, _uncompressed_rle

__all__ = ["DEFAULT_ROOT", "ROOT_ENV_VAR", "default_root", "split_paths", "generate_split",
           "ensure_dataset", "summarize_split"]

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "datasets/synthetic"
ROOT_ENV_VAR = "INSTANCEFCN_SYNTHETIC_ROOT"


def split_paths(root, split):
    """``(json_path, image_root)`` of a split."""
    return os.path.join(root, f"{split}.json"), os.path.join(root, split)


def _write_json(path, data):
    atomic_write(path, lambda f: json.dump(data, f, separators=(",", ":")), "w")


def generate_split(root, split, num_images, seed, min_size=192, max_size=320, min_objects=1,
                   max_objects=8, object_size=(24, 200), crowd_fraction=0.1, empty_fraction=0.07,
                   min_visible_area=64, min_fragment_area=16):
    """Write ``root/<split>/*.png`` and the COCO instances file ``root/<split>.json``.

    Image ``i`` draws from its own generator seeded by ``(seed, i + 1)``, so it does not depend
    on ``num_images``; which images are empty or hold a crowd clump is a rounded quota
    (``empty_fraction``, ``crowd_fraction``) shuffled by ``seed``. Objects whose visible area
    falls below ``min_visible_area`` pixels are dropped (and painted over with background).
    Returns the path of the JSON file.
    """
    params = _params(min_size, max_size, min_objects, max_objects, object_size, crowd_fraction,
                     empty_fraction, min_visible_area, min_fragment_area)
    json_path, image_root = split_paths(root, split)
    if os.path.isdir(image_root):
        shutil.rmtree(image_root)
    os.makedirs(image_root)

    images, annotations = [], []
    for i, kind in enumerate(_image_kinds(num_images, seed, params)):
        rng = np.random.default_rng([seed, i + 1])
        short = int(rng.integers(params["min_size"], params["max_size"] + 1))
        long_ = int(round(short * np.exp(rng.uniform(0, np.log(1.33)))))
        height, width = (short, long_) if rng.random() < 0.5 else (long_, short)
        pixels, instances = _render_image(rng, height, width, kind, params)

        file_name = f"{split}_{i:06d}.png"
        if not cv2.imwrite(os.path.join(image_root, file_name), pixels):
            raise OSError(f"could not write {os.path.join(image_root, file_name)}")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for mask, iscrowd, category_id in instances:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            if iscrowd:
                segmentation = _uncompressed_rle(mask)
            else:
                segmentation = _polygons(mask)
                if not segmentation:
                    continue
            x, y, w, h = (int(v) for v in mask_util.toBbox(rle))
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": int(mask_util.area(rle)),
                "bbox": [x, y, w, h],
                "iscrowd": iscrowd,
            })

    _write_json(json_path, {
        "info": {"description": f"instancefcn_d2 synthetic '{split}' (seed {seed})",
                 "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    })
    return json_path


def default_root():
    """``$INSTANCEFCN_SYNTHETIC_ROOT`` if set, else ``datasets/synthetic`` (relative to CWD)."""
    return os.environ.get(ROOT_ENV_VAR) or DEFAULT_ROOT


def _split_hash(split, num_images, seed, params):
    key = json.dumps([GENERATOR_VERSION, split, int(num_images), int(seed), params], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_dataset(root, splits, **params):
    """Generate each split of ``splits`` ({split: (num_images, seed)}) unless up to date.

    ``root/manifest.json`` records a hash of GENERATOR_VERSION, the split's size and seed and
    ``params`` (keyword arguments of :func:`generate_split`); only splits whose hash differs
    or whose files are missing are regenerated. Returns the list of regenerated splits
    (empty when everything was already in place).
    """
    root = default_root() if root is None else root
    norm = _params(**params)
    manifest_path = os.path.join(root, "manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        manifest = {}
    recorded = manifest.get("splits", {})

    generated = []
    for split, (num_images, seed) in splits.items():
        digest = _split_hash(split, num_images, seed, norm)
        json_path, image_root = split_paths(root, split)
        if (recorded.get(split, {}).get("hash") == digest and os.path.isfile(json_path)
                and os.path.isdir(image_root)):
            logger.info("Synthetic split '%s' is up to date in %s", split, root)
            continue
        logger.info("Generating synthetic split '%s' (%d images, seed %d) in %s",
                    split, num_images, seed, root)
        os.makedirs(root, exist_ok=True)
        generate_split(root, split, num_images, seed, **params)
        recorded[split] = {"hash": digest, "num_images": int(num_images), "seed": int(seed)}
        # Saved after every split so that an interrupted run keeps finished splits.
        _write_json(manifest_path, {"generator_version": GENERATOR_VERSION, "params": norm,
                                    "splits": recorded})
        generated.append(split)
    return generated


def _touching_pairs(masks):
    kernel = np.ones((3, 3), np.uint8)
    count = 0
    for a in range(len(masks)):
        grown = cv2.dilate(masks[a], kernel) > 0
        count += sum(bool(np.any(grown & (masks[b] > 0))) for b in range(a + 1, len(masks)))
    return count


def summarize_split(json_path):
    """Counts for a split: images, instances, crowd regions, empty images, touching pairs.

    Touching pairs are non-crowd instances of one image whose masks are 8-adjacent (or
    overlap), decoded from the stored polygons.
    """
    with open(json_path) as f:
        data = json.load(f)
    by_image = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    touching = 0
    for image_id, anns in by_image.items():
        h, w = sizes[image_id]
        masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w)))
                 for a in anns if not a["iscrowd"]]
        touching += _touching_pairs(masks)
    plain = [a for a in data["annotations"] if not a["iscrowd"]]
    return {
        "images": len(data["images"]),
        "instances": len(plain),
        "crowd": len(data["annotations"]) - len(plain),
        "empty_images": sum(1 for anns in by_image.values() if not anns),
        "touching_pairs": touching,
    }
