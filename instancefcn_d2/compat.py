"""Every backport and workaround for detectron2 v0.6's pure-Python package (on current
torch / numpy / Pillow / setuptools, and on CPU-only machines), in one place.

``apply()`` runs once, from ``import instancefcn_d2``, before any detectron2 submodule that
needs it is imported: import shims and the MapDataset fallback. The trainer state
(``TrainerStateBackport``), the CPU launcher (``launch_any_device``) and DDP of CPU models
(``cpu_ddp_support``) are used by ``instancefcn_d2.engine``. Each item checks for the problem
first (feature detection), so on an upstream detectron2 built from source (main) with its
compiled ops, every item is a no-op, and the day upstream ships a wheel they go together.
"""
import contextlib
import importlib.resources
import importlib.util
import inspect
import logging
import socket
import sys
import types
from datetime import timedelta

__all__ = [
    "apply",
    "MissingCompiledOpError",
    "has_compiled_ops",
    "TrainerStateBackport",
    "cpu_ddp_support",
    "launch_any_device",
]

logger = logging.getLogger(__name__)

_BUILD_HINT = (
    "This detectron2 was installed without its compiled C++/CUDA ops (the registry-only route "
    "of tools/install_detectron2.py). InstanceFCN never needs them; to use {what}, build "
    "detectron2 from source: https://detectron2.readthedocs.io/en/latest/tutorials/install.html"
)


class MissingCompiledOpError(RuntimeError, AttributeError):
    """A detectron2 compiled op (``detectron2._C.<op>``) was called but is not built.

    Also an ``AttributeError`` so that ``hasattr(_C, op)`` stays False instead of raising.
    """


class _MissingCompiledOps(types.ModuleType):
    """Stands in for ``detectron2._C``: importing it works, using any op raises clearly."""

    # Build metadata, not ops: detectron2's collect_env_info (logged by default_setup at
    # every training start) reads these whenever `detectron2._C` imports.
    @staticmethod
    def get_compiler_version():
        return "none (detectron2 installed without compiled ops)"

    @staticmethod
    def get_cuda_version():
        return "none (detectron2 installed without compiled ops)"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingCompiledOpError(
            f"detectron2._C.{name} is not available. " + _BUILD_HINT.format(what=f"'{name}'")
        )


def has_compiled_ops() -> bool:
    """True when detectron2 was built with its C++/CUDA extension."""
    return not isinstance(sys.modules.get("detectron2._C"), _MissingCompiledOps) and (
        importlib.util.find_spec("detectron2._C") is not None
    )


def _stub_compiled_ops():
    # detectron2.layers (deform_conv, rotated_boxes, roi_align_rotated) and
    # evaluation.fast_eval_api do `from detectron2 import _C` at import time. Nothing in
    # InstanceFCN calls those ops, so an importable placeholder lets the rest load.
    import detectron2

    if "detectron2._C" in sys.modules or importlib.util.find_spec("detectron2._C") is not None:
        return
    stub = _MissingCompiledOps("detectron2._C", "placeholder for detectron2's missing compiled ops")
    sys.modules["detectron2._C"] = stub
    detectron2._C = stub


def _pillow_linear():
    # Pillow 10 removed Image.LINEAR; detectron2 v0.6 uses it as a default argument
    # (data/transforms/transform.py, ExtentTransform). It was always an alias of BILINEAR.
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR


def _numpy_aliases():
    # numpy >= 1.24 removed the np.int / np.float aliases (np.bool came back in numpy 2);
    # detectron2 v0.6 uses them in data/build.py (class histogram, printed by every train
    # loader), structures/masks.py and evaluation. They were the Python builtins.
    import numpy as np

    for name, value in (("bool", bool), ("int", int), ("float", float)):
        try:
            getattr(np, name)
        except AttributeError:
            setattr(np, name, value)


def _pkg_resources():
    # setuptools >= 81 no longer ships pkg_resources; detectron2.model_zoo imports it for
    # `resource_filename` only (locating its bundled configs). Provide just that function,
    # and only when the real module is missing.
    # sys.modules first: find_spec raises ValueError for a module whose __spec__ is None,
    # which is the case for this stand-in once installed (a second apply() would crash).
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return

    mod = types.ModuleType("pkg_resources", "minimal stand-in installed by instancefcn_d2.compat")

    def resource_filename(package, resource):
        return str(importlib.resources.files(package).joinpath(resource))

    mod.resource_filename = resource_filename
    sys.modules["pkg_resources"] = mod


def _quiet_jit_script_warning():
    # torch >= 2.10 warns that torch.jit.script is deprecated; detectron2 v0.6 scripts a few
    # helpers at import time, so every run would print it several times. Only this message
    # is silenced.
    import warnings

    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
    )


def _map_dataset_fallback():
    # When a mapper returns None (an unreadable image), detectron2's MapDataset draws a
    # replacement with `rng.sample(<set>, k=1)`, which Python >= 3.11 rejects (TypeError):
    # skipping one bad image would end training. The replacement RNG accepts sets (sorted, so
    # the draw stays seeded) and says clearly when every image failed. Lists pass unchanged,
    # so this is a no-op where detectron2 already samples from a sequence.
    import random

    from detectron2.data import common

    if getattr(common.MapDataset, "_instancefcn_fallback_rng", False):
        return

    class FallbackRandom(random.Random):
        def sample(self, population, k, **kwargs):
            if isinstance(population, (set, frozenset)):
                if not population:
                    raise RuntimeError(
                        "Every image of the training set failed to load or map (see the warnings "
                        "'Cannot use image ...' above): check the image files and annotations."
                    )
                population = sorted(population)
            return super().sample(population, k, **kwargs)

    original_init = common.MapDataset.__init__

    def __init__(self, dataset, map_func):
        original_init(self, dataset, map_func)
        self._rng = FallbackRandom(42)  # the seed detectron2 uses

    common.MapDataset.__init__ = __init__
    common.MapDataset._instancefcn_fallback_rng = True


_applied = False


def apply():
    """Apply every workaround once. Safe to call repeatedly."""
    global _applied
    if _applied:
        return
    _stub_compiled_ops()
    _pillow_linear()
    _numpy_aliases()
    _pkg_resources()
    _quiet_jit_script_warning()
    _map_dataset_fallback()
    _applied = True


class TrainerStateBackport:
    """Mixin for a ``DefaultTrainer`` subclass: checkpoints hold the optimizer state.

    detectron2 v0.6's ``DefaultTrainer`` saves only the iteration and the hooks (LR scheduler);
    the optimizer (SGD momentum buffers) lives in the inner ``SimpleTrainer`` and is lost, so
    ``--resume`` restarted momentum from zero. Upstream's ``DefaultTrainer`` saves and restores
    ``_trainer`` itself (it defines ``state_dict``): there this mixin defers to it.
    """

    def state_dict(self):
        ret = super().state_dict()
        if "_trainer" not in ret:
            ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        from detectron2.engine import DefaultTrainer, TrainerBase

        if "load_state_dict" in vars(DefaultTrainer):  # upstream: it restores _trainer itself
            return super().load_state_dict(state_dict)
        state_dict = dict(state_dict)
        inner = state_dict.pop("_trainer", None)
        TrainerBase.load_state_dict(self, state_dict)  # iteration + hooks (LR scheduler)
        if inner is None:
            logger.warning(
                "The checkpoint has no optimizer state (written before train_net.py saved it): "
                "SGD momentum restarts from zero."
            )
            return
        self._trainer.load_state_dict(inner)
        n = sum(1 for st in self.optimizer.state.values() if "momentum_buffer" in st)
        logger.info(
            f"Restored the trainer state of iteration {self.iter}: optimizer ({n} momentum "
            "buffers) and LR scheduler."
        )


@contextlib.contextmanager
def cpu_ddp_support():
    """Within the block, detectron2's ``create_ddp_model`` works for CPU models (gloo).

    It passes ``device_ids=[local_rank]``, which DistributedDataParallel rejects for a CPU
    module; the wrapper drops it for CPU models only, and changes nothing where the original
    would work (one process, a CUDA model, or ``device_ids`` given by the caller).
    """
    import detectron2.engine.defaults as defaults
    from detectron2.utils import comm

    original = defaults.create_ddp_model

    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, fp16_compression=fp16_compression, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def _cpu_worker(local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout):
    import torch.distributed as dist
    from detectron2.utils import comm

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


def _launch_supports_cpu():
    # Upstream's launch picks gloo itself when CUDA is missing; v0.6's asserts CUDA and uses NCCL.
    from detectron2.engine import launch as launch_module

    try:
        source = inspect.getsource(launch_module._distributed_worker)
    except (AttributeError, OSError, TypeError):
        return False
    return "gloo" in source.lower()


def launch_any_device(main_func, num_processes_per_machine, num_machines=1, machine_rank=0,
                      dist_url=None, args=(), timeout=timedelta(minutes=30)):
    """detectron2's ``launch`` on GPUs; gloo processes on the CPU when CUDA cannot serve them.

    detectron2 v0.6's ``launch`` always initialises NCCL and asserts CUDA, so ``--num-gpus N``
    failed on CPU-only machines; an upstream ``launch`` that handles CPUs is used as it is.
    """
    import torch
    import torch.multiprocessing as mp
    from detectron2.engine import launch

    world_size = num_machines * num_processes_per_machine
    if (world_size <= 1 or _launch_supports_cpu()
            or (torch.cuda.is_available() and torch.cuda.device_count() >= num_processes_per_machine)):
        return launch(main_func, num_processes_per_machine, num_machines=num_machines,
                      machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout)
    logger.warning(f"No {num_processes_per_machine} CUDA devices: launching {world_size} CPU processes (gloo).")
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url=auto needs num_machines == 1")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            dist_url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    mp.spawn(_cpu_worker, nprocs=num_processes_per_machine,
             args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args, timeout),
             daemon=False)
