"""The learning-rate sweep's own split of the training set, so that choosing a side's lr never
looks at the test set: the sweep trains on the first images and scores on the last ones (in the
dataset's order: for frames of a sequence, the latest ones, the least like the rest)."""
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_holdout_split"]


def register_holdout_split(train, fraction):
    """Register ``{train}__sweep_fit`` and ``{train}__sweep_holdout``: the last
    ``round(fraction * n)`` of the ``n`` images of ``train`` held out (at least one, and at
    least one left to train on). Returns ``(fit_name, holdout_name, n_fit, n_holdout)``."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    dicts = DatasetCatalog.get(train)
    if len(dicts) < 2:
        raise ValueError(f"{train} has {len(dicts)} image(s): a held-out split needs at least 2 (pass --sweep-holdout 0)")
    n_holdout = min(max(1, round(fraction * len(dicts))), len(dicts) - 1)
    n_fit = len(dicts) - n_holdout
    names = (f"{train}__sweep_fit", f"{train}__sweep_holdout")
    parent = MetadataCatalog.get(train)
    for name, part in zip(names, (slice(0, n_fit), slice(n_fit, None))):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda p=part: DatasetCatalog.get(train)[p])
        # No json_file: the evaluator then builds the ground truth from these images alone,
        # not from the whole training file.
        meta = MetadataCatalog.get(name)
        for key in ("thing_classes", "thing_dataset_id_to_contiguous_id"):
            if hasattr(parent, key) and not hasattr(meta, key):
                meta.set(**{key: getattr(parent, key)})
    return (*names, n_fit, n_holdout)
