"""What every measurement shares: the config and weights of a row, its input image, medians and
peak memory. Imported by the workers (workers.py, workers_mask_rcnn.py); imports none of them."""
import os
import resource
import statistics

from tools.benchmark import REPO

__all__ = ["build_cfg", "gpu_peak", "load_weights", "median", "peak_rss_gib", "rand_image"]


def median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1024 ** 3  # Linux: KiB


def rand_image(h, w, seed=0):
    """``(3, h, w)`` uint8 noise, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def build_cfg(config, device, opts=()):
    """Project config from a repository-relative YAML plus ``KEY VALUE`` overrides."""
    import instancefcn_d2  # noqa: F401  (registrations and detectron2 shims first)
    from detectron2.config import get_cfg

    from instancefcn_d2 import add_instancefcn_config
    from instancefcn_d2.engine import merge_config

    cfg = get_cfg()
    add_instancefcn_config(cfg)
    return merge_config(cfg, os.path.join(REPO, config), list(opts) + ["MODEL.DEVICE", device])


def load_weights(model, cfg, mode):
    """``mode`` "auto": the config's MODEL.WEIGHTS when it is a file here (ImageNet backbones;
    the heads keep their random init), else random init; "none": random init. Weights do not
    change the computation, only the masks and so how much there is to paste."""
    path = cfg.MODEL.WEIGHTS
    if mode == "none" or not path:
        return "random init"
    local = path if os.path.isabs(path) else os.path.join(REPO, path)
    if "://" in path or not os.path.isfile(local):
        return f"random init ({path} not available here)"
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).load(local)
    return f"backbone from {path}; heads random"


def gpu_peak(device):
    import torch

    return {"peak_cuda_gb": torch.cuda.max_memory_allocated() / 1024 ** 3} if device == "cuda" else {}
