"""Training-time plumbing: config checks that fail early and clearly, and launching on any device.

detectron2's ``launch`` (v0.6) always initialises NCCL and asserts CUDA, and its
``create_ddp_model`` passes ``device_ids`` that a CPU module rejects. ``launch_any_device``
and ``cpu_ddp_support`` make ``--num-gpus N`` work with gloo on CPU-only machines too, and
defer to detectron2 untouched whenever enough GPUs are present.
"""
import contextlib
import difflib
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.data import DatasetCatalog
from detectron2.engine import launch
from detectron2.utils import comm

__all__ = ["merge_config", "check_config", "launch_any_device", "cpu_ddp_support"]

logger = logging.getLogger(__name__)


def _all_keys(cfg, prefix=""):
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        yield full
        if hasattr(v, "items"):
            yield from _all_keys(v, full + ".")


def merge_config(cfg, config_file: str = "", opts=()):
    """``merge_from_file`` + ``merge_from_list`` with close-match hints for unknown keys."""
    if config_file and not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file not found: {config_file!r}")
    try:
        if config_file:
            cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
    except KeyError as e:
        msg = str(e.args[0]) if e.args else str(e)
        bad = msg.split(":")[-1].strip().strip("'\"")
        hints = difflib.get_close_matches(bad, list(_all_keys(cfg)), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(hints)}?" if hints else ""
        raise KeyError(f"{msg}.{hint} (config keys: instancefcn_d2/config.py)") from None
    return cfg


def check_config(cfg, training: bool = True, resume: bool = False):
    """Raise before any work starts when the datasets or the weights file cannot be used."""
    for split, names in (("DATASETS.TRAIN", cfg.DATASETS.TRAIN if training else ()),
                         ("DATASETS.TEST", cfg.DATASETS.TEST)):
        for name in names:
            if name not in DatasetCatalog.list():
                close = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
                raise KeyError(
                    f"{split} names {name!r}, which is not a registered dataset"
                    + (f" (did you mean {close}?)" if close else "")
                    + ". Builtin COCO/LVIS names need their files under $DETECTRON2_DATASETS; "
                    "register your own COCO-format data with detectron2.data.datasets."
                    "register_coco_instances (see README, 'Your own data')."
                )
    c = cfg.MODEL.INSTANCEFCN
    if not 1 <= c.K <= c.WINDOW_SIZE:
        raise ValueError(f"MODEL.INSTANCEFCN.K ({c.K}) must be in [1, WINDOW_SIZE={c.WINDOW_SIZE}]")
    weights = cfg.MODEL.WEIGHTS
    last = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if resume and os.path.isfile(last):
        return  # the checkpointer resumes from OUTPUT_DIR and ignores MODEL.WEIGHTS
    if weights and "://" not in weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"MODEL.WEIGHTS={weights!r} does not exist. For the ImageNet VGG-16 start run "
                "`bash tools/setup.sh` (it writes weights/vgg16_caffe_imagenet.pth), or point "
                "MODEL.WEIGHTS at a trained model_final.pth."
            )
        if cfg.MODEL.BACKBONE.NAME == "build_vgg16_backbone":
            from .weights import check_vgg16_checkpoint

            check_vgg16_checkpoint(weights)


@contextlib.contextmanager
def cpu_ddp_support():
    """Within the block, detectron2's ``create_ddp_model`` works for CPU models (gloo)."""
    import detectron2.engine.defaults as defaults

    original = defaults.create_ddp_model

    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            kwargs["device_ids"] = None
        return original(model, fp16_compression=fp16_compression, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    rank = machine_rank * num_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=rank,
                            timeout=timeout)
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    main_func(*args)


def launch_any_device(main_func, num_processes_per_machine, num_machines=1, machine_rank=0,
                      dist_url=None, args=(), timeout=timedelta(minutes=30)):
    """detectron2's ``launch`` on GPUs; gloo processes on the CPU when CUDA cannot serve them."""
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1 or (torch.cuda.is_available() and torch.cuda.device_count() >= num_processes_per_machine):
        return launch(main_func, num_processes_per_machine, num_machines=num_machines,
                      machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout)
    logger.warning(f"No {num_processes_per_machine} CUDA devices: launching {world_size} CPU processes (gloo).")
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url=auto needs num_machines == 1")
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    mp.spawn(_cpu_worker, nprocs=num_processes_per_machine,
             args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
             daemon=False)
