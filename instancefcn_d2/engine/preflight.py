"""Preflight checks: a config, its datasets and its weights are checked before any work starts,
so that a bad path or value fails in seconds with a clear message instead of hours in."""
import difflib
import logging
import os

from detectron2.data import DatasetCatalog

from ..targets import check_window_size

__all__ = ["check_config", "check_dataset_files", "check_levels_reach_parameters", "check_weights"]

logger = logging.getLogger(__name__)


def check_config(cfg, training: bool = True, resume: bool = False, check_files: bool = True,
                 config_file: str = ""):
    """Raise before any work starts when the datasets or the weights file cannot be used.

    With ``check_files`` every dataset of the run (DATASETS.TRAIN when ``training``, and
    DATASETS.TEST, which periodic evaluation reads mid-run) is loaded once and each image
    file is stat-ed: a missing JSON file, or image files that are missing or empty (0 bytes),
    fail here, with their count and first names, instead of hours into training. In training,
    the scale coverage of DATASETS.TRAIN is logged from the same dicts, with a warning (naming
    ``config_file`` in the fix) when the windows cannot learn most objects (:mod:`.scale_coverage`).
    """
    c = cfg.MODEL.INSTANCEFCN
    check_window_size(c.WINDOW_SIZE)
    if not 1 <= c.K <= c.WINDOW_SIZE:
        raise ValueError(f"MODEL.INSTANCEFCN.K ({c.K}) must be in [1, WINDOW_SIZE={c.WINDOW_SIZE}]")
    datasets = [("DATASETS.TRAIN", n) for n in (cfg.DATASETS.TRAIN if training else ())]
    datasets += [("DATASETS.TEST", n) for n in cfg.DATASETS.TEST]
    for split, name in datasets:
        if name not in DatasetCatalog.list():
            close = difflib.get_close_matches(name, sorted(set(DatasetCatalog.list()) | _project_names()), n=3)
            raise KeyError(
                f"{split} names {name!r}, which is not a registered dataset"
                + (f" (did you mean {close}?)" if close else "")
                + ". Builtin COCO/LVIS names need their files under $DETECTRON2_DATASETS; "
                "name your own COCO-format data on the command line with --dataset "
                "NAME=annotations.json:images_dir (docs/custom_data.md)."
            )
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"MODEL.PIXEL_MEAN={mean} / MODEL.PIXEL_STD={std} must have 3 values (BGR) each and "
            "a positive std (a zero std divides the input by zero: NaN losses)."
        )
    if training and cfg.INPUT.CROP.ENABLED:
        try:
            import shapely  # noqa: F401
        except ImportError:
            raise ImportError(
                "INPUT.CROP.ENABLED needs the 'shapely' package (detectron2 crops polygon masks "
                "with it; without it every training image would be skipped): pip install shapely"
            ) from None
    _check_category_subsets(cfg, training)
    if training:
        check_levels_reach_parameters(cfg, config_file)
    last = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    # On resume the checkpointer reads OUTPUT_DIR/last_checkpoint and ignores MODEL.WEIGHTS.
    if resume and os.path.isfile(last):
        _check_last_checkpoint(last)
    else:
        check_weights(cfg)
    if check_files:
        train = [(name, _checked_dataset_dicts(name, split)) for split, name in datasets]
        train = [(name, dicts) for (split, _), (name, dicts) in zip(datasets, train) if split == "DATASETS.TRAIN"]
        if train:
            _log_scale_coverage(cfg, train, config_file)


def check_levels_reach_parameters(cfg, config_file: str = ""):
    """Raise when trainable backbone parameters reach none of MODEL.INSTANCEFCN.IN_FEATURES.

    E.g. an FPN over res2..res5 read at p2..p4 only: ``fpn_output5`` gets no gradient, and
    detectron2's ``DistributedDataParallel`` (``find_unused_parameters=False``) fails on the
    second iteration of a multi-GPU (or multi-process CPU) run. Checked with one forward and
    backward pass of the backbone built on the meta device (no weights, milliseconds).
    """
    from ..backbone.inspection import build_backbone_skeleton, unreached_parameters

    if cfg.MODEL.META_ARCHITECTURE != "InstanceFCN":
        return
    backbone = build_backbone_skeleton(cfg)
    levels = list(cfg.MODEL.INSTANCEFCN.IN_FEATURES)
    if not levels or any(f not in backbone.output_shape() for f in levels):
        return  # building the model reports it, naming the outputs there are
    unused = unreached_parameters(backbone, levels, len(cfg.MODEL.PIXEL_MEAN))
    if unused:
        where = f" in {config_file}" if config_file else ""
        raise ValueError(
            f"MODEL.INSTANCEFCN.IN_FEATURES {levels} reach none of these trainable backbone parameters: "
            f"{unused[:6]}{' ...' if len(unused) > 6 else ''} ({len(unused)} in all). They would get no "
            "gradient, and multi-GPU training (DistributedDataParallel) fails on its second iteration. "
            f"Fix{where}: add the levels they feed to MODEL.INSTANCEFCN.IN_FEATURES (for an FPN, its "
            "coarsest level), or build a backbone that ends at the coarsest level read (VGG-16-FPN: "
            "MODEL.FPN.IN_FEATURES)."
        )


def _log_scale_coverage(cfg, named_dicts, config_file):
    from ..scale_coverage import ObjectSizes, check_scale_coverage, scale_setup_from_config

    names = [name for name, _ in named_dicts]
    objs = ObjectSizes.from_dataset_dicts(d for _, dicts in named_dicts for d in dicts)
    check_scale_coverage(objs, scale_setup_from_config(cfg), what=f"DATASETS.TRAIN {names}",
                         config_file=config_file, dataset=names[0])


def _check_category_subsets(cfg, training):
    """Open-world keys: known values, and category ids that exist in the datasets (so that a
    typo fails now, not when the evaluator is built after training)."""
    from ..data.categories import UNSEEN_AS, contiguous_category_ids
    from ..evaluation.open_world import BUDGET_RULES

    if cfg.DATASETS.TRAIN_UNSEEN_AS not in UNSEEN_AS:
        raise ValueError(f"DATASETS.TRAIN_UNSEEN_AS must be one of {UNSEEN_AS}, got {cfg.DATASETS.TRAIN_UNSEEN_AS!r}")
    if cfg.TEST.PROPOSAL_BUDGET_RULE not in BUDGET_RULES:
        raise ValueError(f"TEST.PROPOSAL_BUDGET_RULE must be one of {BUDGET_RULES}, got {cfg.TEST.PROPOSAL_BUDGET_RULE!r}")
    keys = [("DATASETS.TEST", "TEST.PROPOSAL_EVAL_CATEGORY_IDS", cfg.TEST.PROPOSAL_EVAL_CATEGORY_IDS)]
    if training:
        keys.append(("DATASETS.TRAIN", "DATASETS.TRAIN_CATEGORY_IDS", cfg.DATASETS.TRAIN_CATEGORY_IDS))
    for split, key, ids in keys:
        for name in cfg.DATASETS[split.split(".")[1]]:
            try:
                contiguous_category_ids([name], ids)
            except ValueError as e:
                raise ValueError(f"{key}: {e}") from e


def _project_names():
    """Dataset names this project can register (close-match candidates for typos)."""
    from ..data.datasets import project_dataset_names

    return set(project_dataset_names())


def _check_last_checkpoint(last):
    with open(last) as f:
        name = f.read().strip()
    path = os.path.join(os.path.dirname(last), name)
    if not name or not os.path.isfile(path) or os.path.getsize(path) == 0:
        others = sorted(f for f in os.listdir(os.path.dirname(last)) if f.endswith(".pth"))
        raise FileNotFoundError(
            f"--resume: {last} names {name!r}, but {path} is missing or empty. Write the name of an "
            f"intact checkpoint into it (present: {others[-3:] or 'none'}), or delete it to start "
            "from MODEL.WEIGHTS."
        )


def check_weights(cfg, inference: bool = False):
    """Raise unless MODEL.WEIGHTS is empty, a URL, or a file that can initialise the model.

    ``inference`` (tools/demo.py): an empty MODEL.WEIGHTS is only warned about (a random
    model runs, but its proposals are meaningless) and the hints name a trained model.
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        if inference:
            logger.warning("MODEL.WEIGHTS is empty: the model is randomly initialised and its proposals "
                           "are meaningless. Pass --opts MODEL.WEIGHTS path/to/model_final.pth.")
        return
    if "://" in weights:
        return
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"MODEL.WEIGHTS={weights!r} does not exist. " + (
                "Point it at a trained model, e.g. --opts MODEL.WEIGHTS output/quickstart/model_final.pth"
                if inference else
                "For the ImageNet VGG-16 start run `bash tools/setup.sh` (it writes "
                "weights/vgg16_caffe_imagenet.pth), or point MODEL.WEIGHTS at a trained model_final.pth."
            )
        )
    if cfg.MODEL.BACKBONE.NAME in ("build_vgg16_backbone", "build_vgg16_fpn_backbone"):
        from ..weights import check_vgg16_checkpoint

        # An ImageNet start names the layers backbone.conv*; a trained VGG-16-FPN model has
        # them under backbone.bottom_up. (the FPN's load hook accepts both).
        fpn = cfg.MODEL.BACKBONE.NAME == "build_vgg16_fpn_backbone"
        try:
            try:
                check_vgg16_checkpoint(weights)
            except ValueError:
                if not fpn:
                    raise
                check_vgg16_checkpoint(weights, prefix="backbone.bottom_up.")
        except ValueError as e:
            raise ValueError(
                f"MODEL.WEIGHTS={weights!r} cannot initialise the VGG-16 backbone: {str(e).rstrip('.')}. Use the "
                "file written by `bash tools/setup.sh`, convert your own with "
                "tools/convert_vgg16_weights.py, or set MODEL.WEIGHTS \"\" to train from scratch."
            ) from e


def check_dataset_files(name: str, split: str = "dataset", max_names: int = 5):
    """Load a registered dataset and raise unless its JSON and every image file are usable.

    Returns the number of images."""
    return len(_checked_dataset_dicts(name, split, max_names))


def _checked_dataset_dicts(name: str, split: str, max_names: int = 5):
    """:func:`check_dataset_files`, returning the dataset dicts.

    Only ``os.stat`` per image (no decoding): cheap even for
    ~100k local files. Corrupt-but-nonempty images are left to the mapper (skipped with a
    warning in training, a clear error at test time).
    """
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    json_file = meta.get("json_file", None)
    if json_file and "://" not in json_file and not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"{split}: dataset {name!r} reads its annotations from {json_file!r}, which does "
            "not exist. Fix the path given to register_coco_instances (or $DETECTRON2_DATASETS "
            "for builtin names)."
        )
    try:
        dicts = DatasetCatalog.get(name)
    except Exception as e:
        raise RuntimeError(
            f"{split}: loading dataset {name!r}"
            + (f" from {json_file!r}" if json_file else "")
            + f" failed: {type(e).__name__}: {e}"
        ) from e
    missing, empty = [], []
    for d in dicts:
        path = d.get("file_name", "")
        if "://" in path:
            continue
        try:
            if os.stat(path).st_size == 0:
                empty.append(path)
        except OSError:
            missing.append(path)
    if missing or empty:
        image_root = meta.get("image_root", None)
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(dicts)} image files do not exist, e.g. {missing[:max_names]}")
        if empty:
            parts.append(f"{len(empty)} image file(s) are empty (0 bytes), e.g. {empty[:max_names]}")
        raise FileNotFoundError(
            f"{split}: dataset {name!r}: " + "; ".join(parts) + ". "
            + (f"Check the image root it was registered with ({image_root!r}) and the "
               "'file_name' fields of its JSON, " if image_root else "Check the 'file_name' fields, ")
            + "or remove those images from the annotations."
        )
    logger.info(f"{split}: dataset {name!r}: {len(dicts)} images, all files present.")
    return dicts
