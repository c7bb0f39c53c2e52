"""Data for InstanceFCN: the dataset mapper, the synthetic generator, dataset names."""
from .mapper import InstanceFCNDatasetMapper, clean_annotations  # noqa: F401
from .synthetic import GENERATOR_VERSION  # noqa: F401
from .synthetic_splits import (  # noqa: F401
    DEFAULT_ROOT,
    default_root,
    ensure_dataset,
    generate_split,
    split_paths,
    summarize_split,
)
from .datasets import SYNTHETIC_PRESETS, register_project_datasets, register_synthetic  # noqa: F401
