"""Data for InstanceFCN: the dataset mapper, the synthetic generator, dataset names."""
from .mapper import InstanceFCNDatasetMapper, clean_annotations  # noqa: F401
from .synthetic import (  # noqa: F401
    DEFAULT_ROOT,
    GENERATOR_VERSION,
    default_root,
    ensure_dataset,
    generate_split,
    register_synthetic,
    split_paths,
    summarize_split,
)
from .datasets import SYNTHETIC_PRESETS, register_project_datasets  # noqa: F401
