"""What a training script imports: the trainer, the preflight checks and the launcher.

    from instancefcn_d2.engine import Trainer, check_config, launch_any_device, save_results
"""
from ..compat import cpu_ddp_support, launch_any_device
from ..config import merge_config
from .preflight import check_config, check_dataset_files, check_weights
from .trainer import Trainer, explain_nonfinite_loss, save_results

__all__ = [
    "Trainer",
    "check_config",
    "check_dataset_files",
    "check_weights",
    "cpu_ddp_support",
    "explain_nonfinite_loss",
    "launch_any_device",
    "merge_config",
    "save_results",
]
