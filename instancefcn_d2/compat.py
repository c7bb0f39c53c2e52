"""Every workaround needed to run detectron2 v0.6's pure-Python package on current
torch / numpy / Pillow / setuptools, in one place.

``apply()`` runs once, from ``import instancefcn_d2``, before any detectron2 submodule that
needs it is imported. Each item checks for the problem first, so on an upstream detectron2
built from source (v0.6 or main) with its compiled ops, every item is a no-op.
"""
import importlib.resources
import importlib.util
import sys
import types

__all__ = ["apply", "MissingCompiledOpError", "has_compiled_ops"]

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
