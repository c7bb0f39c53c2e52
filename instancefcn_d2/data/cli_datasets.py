"""COCO-JSON datasets named on the command line: ``--dataset NAME=annotations.json:images_dir``
(repeatable), registered before the config is read, so that ``DATASETS.TRAIN`` / ``TEST`` can
name them (``train_net.py``, ``tools/plan_scales.py``; docs/custom_data.md).

Every argument is checked before anything is registered, and nothing is written: a malformed
argument, a missing JSON or image folder, a JSON that is not COCO instances, an image the JSON
names that is not in the folder, an annotation without a mask (InstanceFCN learns masks), or a
name that is already a dataset fails with one message that says which and how to fix it.
"""
import json
import os
from dataclasses import dataclass
from typing import Iterable, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["DatasetArgumentError", "CocoDatasetArg", "parse_dataset_arg", "check_coco_dataset",
           "register_dataset_args", "add_dataset_argument"]

SYNTAX = "NAME=annotations.json:images_dir"
_SHOW = 5  # names listed in an error


class DatasetArgumentError(ValueError):
    """A ``--dataset`` argument that cannot be used (the message says why)."""


@dataclass(frozen=True)
class CocoDatasetArg:
    name: str
    json_file: str
    image_root: str


def parse_dataset_arg(text: str) -> CocoDatasetArg:
    """``"NAME=annotations.json:images_dir"`` -> :class:`CocoDatasetArg` (paths as given).

    The JSON path ends at the first ``.json:``, so image folders may contain ``:``."""
    name, eq, rest = text.partition("=")
    cut = rest.lower().find(".json:")
    if not eq or not name.strip() or cut < 0 or not rest[cut + 6:]:
        raise DatasetArgumentError(
            f"--dataset {text!r}: expected {SYNTAX} (a name, '=', a COCO instances .json file, ':', "
            "the folder its file_names are relative to)")
    if any(c.isspace() for c in name) or "," in name:
        raise DatasetArgumentError(f"--dataset {text!r}: the name {name!r} may not contain spaces or commas")
    return CocoDatasetArg(name, rest[:cut + 5], rest[cut + 6:])


def _first(items: List, n: int = _SHOW) -> str:
    return ", ".join(str(i) for i in items[:n]) + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _has_mask(seg) -> bool:
    if isinstance(seg, dict):  # RLE
        return bool(seg.get("counts")) and bool(seg.get("size"))
    if isinstance(seg, list):  # polygons: at least one with >= 3 points
        return any(isinstance(p, list) and len(p) >= 6 for p in seg)
    return False


def check_coco_dataset(arg: CocoDatasetArg) -> dict:
    """Raise :class:`DatasetArgumentError` unless ``arg`` is a usable COCO instances set with
    masks; returns ``{"images": n, "annotations": n}``. Reads the JSON and stats each image."""
    where = f"--dataset {arg.name}"
    if not os.path.isfile(arg.json_file):
        raise DatasetArgumentError(f"{where}: annotation file {arg.json_file!r} not found")
    if not os.path.isdir(arg.image_root):
        raise DatasetArgumentError(f"{where}: image folder {arg.image_root!r} not found")
    try:
        with open(arg.json_file) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetArgumentError(f"{where}: {arg.json_file} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list) or not isinstance(data.get("categories"), list):
        raise DatasetArgumentError(
            f"{where}: {arg.json_file} is not a COCO instances file (needs 'images', 'annotations' "
            "and 'categories' lists)")
    images = data["images"]
    bad = [i for i, im in enumerate(images) if not {"id", "file_name", "height", "width"} <= set(im)]
    if bad:
        raise DatasetArgumentError(f"{where}: images at positions {_first(bad)} lack id / file_name / height / width")
    missing = [im["file_name"] for im in images if not os.path.isfile(os.path.join(arg.image_root, im["file_name"]))]
    if missing:
        raise DatasetArgumentError(
            f"{where}: {len(missing)} of {len(images)} images named in {arg.json_file} are not in "
            f"{arg.image_root}: {_first(missing)}")
    ids, cats = {im["id"] for im in images}, {c.get("id") for c in data["categories"]}
    anns = data["annotations"]
    orphans = [a.get("id") for a in anns if a.get("image_id") not in ids]
    if orphans:
        raise DatasetArgumentError(f"{where}: annotations {_first(orphans)} name image ids not in 'images'")
    unknown = sorted({a.get("category_id") for a in anns} - cats, key=str)
    if unknown:
        raise DatasetArgumentError(f"{where}: annotations use category ids {_first(unknown)} not in 'categories'")
    maskless = [a.get("id") for a in anns if not a.get("iscrowd", 0) and not _has_mask(a.get("segmentation"))]
    if maskless:
        raise DatasetArgumentError(
            f"{where}: {len(maskless)} of {len(anns)} annotations have no mask (segmentation missing or "
            f"empty), ids {_first(maskless)}. InstanceFCN learns instance masks: give every object a "
            "polygon or RLE mask, or drop the box-only annotations.")
    return {"images": len(images), "annotations": len(anns)}


def register_dataset_args(texts: Iterable[str], reserved: Iterable[str] = ()) -> List[str]:
    """Parse and check every ``--dataset`` argument, then register them all (none if any is
    bad). ``reserved``: further names that may not be taken (datasets registered on demand,
    e.g. the project's own). An argument registered earlier in this process with the same
    files is left as it is. Returns the names."""
    args = [parse_dataset_arg(t) for t in texts]
    names = [a.name for a in args]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetArgumentError(f"--dataset names {twice} more than once")
    reserved = set(reserved)
    todo = []
    for a in args:
        if a.name in DatasetCatalog.list():
            meta = MetadataCatalog.get(a.name)
            if (meta.get("json_file", None), meta.get("image_root", None)) == (a.json_file, a.image_root):
                continue  # the same files, registered by an earlier call in this process
            raise DatasetArgumentError(f"--dataset {a.name}: the name is already a registered dataset; choose another")
        if a.name in reserved:
            raise DatasetArgumentError(f"--dataset {a.name}: the name is one of this project's datasets; choose another")
        todo.append(a)
    for a in todo:
        check_coco_dataset(a)
    for a in todo:
        register_coco_instances(a.name, {}, a.json_file, a.image_root)
    return names


def add_dataset_argument(parser):
    """``--dataset NAME=annotations.json:images_dir`` (repeatable) on an argparse parser."""
    parser.add_argument(
        "--dataset", action="append", default=[], metavar=SYNTAX,
        help="register a COCO instances JSON (with masks) as NAME before the config is read, for "
        "DATASETS.TRAIN / DATASETS.TEST; repeatable")
    return parser
