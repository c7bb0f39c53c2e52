"""Datasets for InstanceFCN: a deterministic synthetic COCO-format generator."""
from .synthetic import (  # noqa: F401
    DEFAULT_ROOT,
    DEFAULT_SPLITS,
    GENERATOR_VERSION,
    default_root,
    ensure_dataset,
    generate_split,
    register_synthetic,
    split_paths,
    summarize_split,
)
