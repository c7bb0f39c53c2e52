"""Category subsets for open-world proposals: dataset category ids -> the ids the mapper sees.

Configs name categories by their *dataset* ids (as in the COCO JSON: 1..90 for COCO), the ids
users know and papers list. Detectron2's COCO loader maps them to contiguous ids (0..K-1) in
the dataset dicts and records the map in ``MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id``.
"""
from typing import Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["UNSEEN_AS", "contiguous_category_ids"]

# What training does with annotations of categories outside DATASETS.TRAIN_CATEGORY_IDS.
UNSEEN_AS = ("background", "ignore")


def _id_map(name):
    """``{dataset id: contiguous id}`` of a registered dataset, or None when it has none."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_dataset_id_to_contiguous_id") and name in DatasetCatalog.list():
        # Datasets registered with register_coco_instances(name, {}, ...) learn the map only
        # when loaded; the builtin COCO sets carry it from the start (no load then).
        DatasetCatalog.get(name)
    return meta.get("thing_dataset_id_to_contiguous_id", None)


def contiguous_category_ids(dataset_names: Sequence[str], dataset_ids: Sequence[int]) -> Optional[Tuple[int, ...]]:
    """The contiguous ids (as in dataset dicts) of ``dataset_ids`` in every dataset of ``dataset_names``.

    Returns None for an empty ``dataset_ids`` (all categories). Datasets without an id map use
    their ids as they are (identity). Raises ``ValueError`` naming the unknown ids (and the
    known ones) when an id is not a category of a dataset, or when the datasets disagree.
    """
    if not dataset_ids:
        return None
    wanted = [int(i) for i in dataset_ids]
    resolved = None if dataset_names else tuple(sorted(set(wanted)))
    for name in dataset_names:
        id_map = _id_map(name)
        if id_map is None:
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            id_map = {i: i for i in (range(len(classes)) if classes is not None else wanted)}
        unknown = sorted(set(wanted) - set(id_map))
        if unknown:
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            known = {d: classes[c] for d, c in sorted(id_map.items())} if classes else sorted(id_map)
            raise ValueError(
                f"Category ids {unknown} are not categories of dataset {name!r} (ids as in its "
                f"annotation file; known: {known})."
            )
        ids = tuple(sorted(id_map[i] for i in set(wanted)))
        if resolved is not None and ids != resolved:
            raise ValueError(
                f"Datasets {list(dataset_names)} map the category ids {sorted(set(wanted))} to different "
                "contiguous ids; train on datasets with the same categories."
            )
        resolved = ids
    return resolved
