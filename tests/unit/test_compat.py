"""instancefcn_d2/compat.py: detectron2 v0.6 (pure Python) on current torch/numpy/Pillow/setuptools,
and tools/install_detectron2.py leaving an importable detectron2 alone."""
import logging
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import instancefcn_d2
from instancefcn_d2 import compat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

needs_missing_ops = pytest.mark.skipif(
    compat.has_compiled_ops(), reason="detectron2 built with its compiled ops (upstream build)"
)


def _run(code_or_args, timeout=120):
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


# --------------------------------------------------------------------------- imports
def test_detectron2_subpackages_import():
    import detectron2.data  # noqa: F401
    import detectron2.engine  # noqa: F401
    import detectron2.evaluation  # noqa: F401
    import detectron2.layers  # noqa: F401
    import detectron2.model_zoo  # noqa: F401
    import detectron2.modeling  # noqa: F401
    from detectron2.evaluation import COCOEvaluator  # noqa: F401
    from detectron2.layers import DeformConv, ROIAlign, nms  # noqa: F401


def test_model_zoo_config_file_exists():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert os.path.isfile(path), path
    with open(path) as f:
        assert "_BASE_" in f.read()
    with pytest.raises(RuntimeError):
        model_zoo.get_config_file("COCO-InstanceSegmentation/no_such_config.yaml")


def test_pkg_resources_resource_filename():
    import pkg_resources

    path = pkg_resources.resource_filename("detectron2.model_zoo", os.path.join("configs", "Base-RCNN-FPN.yaml"))
    assert os.path.isfile(path), path


# --------------------------------------------------------------------------- compiled ops
@needs_missing_ops
def test_c_stub_raises_clear_error():
    from detectron2 import _C

    assert isinstance(_C, compat._MissingCompiledOps)
    assert sys.modules["detectron2._C"] is _C
    with pytest.raises(compat.MissingCompiledOpError) as e:
        _C.deform_conv_forward
    msg = str(e.value)
    assert "deform_conv_forward" in msg
    assert "build detectron2 from source" in msg
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, AttributeError)
    assert not hasattr(_C, "x")
    assert not hasattr(_C, "deform_conv_forward")
    with pytest.raises(AttributeError):
        _C.__file__  # dunders are plain AttributeErrors (no misleading message)


@needs_missing_ops
def test_deform_conv_module_calls_fail_clearly_when_op_needed():
    import detectron2.layers.deform_conv as dc

    # the module-level `_C` the op functions use is the stub
    with pytest.raises(compat.MissingCompiledOpError, match="modulated_deform_conv_forward"):
        dc._C.modulated_deform_conv_forward(None)


def test_deform_conv_forward_on_cpu_uses_torchvision_fallback():
    # detectron2 v0.6's DeformConv runs torchvision's deform_conv2d on CPU, so it needs no
    # compiled op even in the registry-only install.
    from detectron2.layers import DeformConv

    torch.manual_seed(0)
    conv = DeformConv(4, 8, kernel_size=3, padding=1)
    x = torch.randn(1, 4, 6, 7)
    offset = torch.zeros(1, 2 * 9, 6, 7)
    y = conv(x, offset)
    assert y.shape == (1, 8, 6, 7)
    # zero offsets: a plain convolution
    ref = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


@needs_missing_ops
def test_fast_coco_eval_fails_clearly():
    """COCOEvaluator's default use_fast_impl=True needs _C; it must fail with the clear error
    (evaluators in this build should pass use_fast_impl=False)."""
    from pycocotools.coco import COCO

    from detectron2.evaluation.fast_eval_api import COCOeval_opt

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
                         "area": 16, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}],
    }
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])
    ev = COCOeval_opt(gt, dt, "bbox")
    with pytest.raises(compat.MissingCompiledOpError, match="InstanceAnnotation"):
        ev.evaluate()


def test_has_compiled_ops_matches_the_installed_extension():
    # Independent fact: a detectron2 built with its C++/CUDA ops has the extension module file
    # (_C.<abi>.so, or .pyd on Windows) in its package directory; the registry copy has none.
    import glob

    import detectron2

    built = glob.glob(os.path.join(os.path.dirname(detectron2.__file__), "_C*.so")) + glob.glob(
        os.path.join(os.path.dirname(detectron2.__file__), "_C*.pyd"))
    assert compat.has_compiled_ops() == bool(built)


# --------------------------------------------------------------------------- Pillow / numpy
def test_pillow_linear_alias():
    from PIL import Image

    assert hasattr(Image, "LINEAR")
    assert Image.LINEAR == Image.BILINEAR


def test_extent_transform():
    from detectron2.data.transforms import ExtentTransform

    img = (np.arange(20 * 30 * 3) % 251).astype(np.uint8).reshape(20, 30, 3)
    t = ExtentTransform(src_rect=(0, 0, 30, 20), output_size=(10, 15))
    out = t.apply_image(img)
    assert out.shape == (10, 15, 3) and out.dtype == np.uint8
    # a crop of a constant image stays constant
    const = np.full((20, 30, 3), 77, np.uint8)
    crop = ExtentTransform(src_rect=(5, 5, 25, 15), output_size=(10, 20)).apply_image(const)
    assert crop.shape == (10, 20, 3) and (crop == 77).all()


def test_numpy_aliases():
    assert np.int is int and np.float is float
    # numpy 2 restored np.bool as np.bool_, older numpy gets the builtin: either must be a
    # usable boolean dtype (detectron2 writes `arr.astype(np.bool)`).
    assert np.bool in (bool, np.bool_)
    assert np.asarray([2, 0]).astype(np.bool).tolist() == [True, False]


def test_print_instances_class_histogram(caplog):
    from detectron2.data.build import print_instances_class_histogram

    dataset = [
        {"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1, "iscrowd": 1}]},
        {"annotations": [{"category_id": 1}]},
        {"annotations": []},
    ]
    logger = logging.getLogger("detectron2")
    old_propagate = logger.propagate
    logger.propagate = True  # detectron2's logger may not propagate; let caplog see it
    try:
        with caplog.at_level(logging.INFO):
            print_instances_class_histogram(dataset, ["cat", "dog"])
    finally:
        logger.propagate = old_propagate
    text = caplog.text
    # crowd annotations are not counted: cat 1, dog 2, total 3
    assert re.search(r"cat\s*\|\s*1\s*\|\s*dog\s*\|\s*2\b", text), text
    assert re.search(r"total\s*\|\s*3\b", text), text


# --------------------------------------------------------------------------- apply()
def test_apply_idempotent(monkeypatch):
    import detectron2
    from PIL import Image

    def jit_filters():
        return [f for f in warnings.filters if f[1] is not None and "jit" in f[1].pattern]

    stub_before = sys.modules.get("detectron2._C")
    compat.apply()
    compat.apply()
    assert compat._applied
    assert sys.modules.get("detectron2._C") is stub_before
    # each step is itself idempotent, even if forced to run again
    monkeypatch.setattr(compat, "_applied", False)
    compat.apply()
    assert compat._applied
    assert sys.modules.get("detectron2._C") is stub_before
    assert getattr(detectron2, "_C", None) is stub_before
    assert Image.LINEAR == Image.BILINEAR
    assert np.int is int
    compat._quiet_jit_script_warning()
    assert len(jit_filters()) == 1  # re-adding does not stack duplicates
    import pkg_resources

    assert sys.modules["pkg_resources"] is pkg_resources


def test_import_is_idempotent():
    import importlib

    again = importlib.import_module("instancefcn_d2")
    assert again is instancefcn_d2
    assert hasattr(instancefcn_d2, "VGG16") and hasattr(instancefcn_d2, "add_instancefcn_config")


# --------------------------------------------------------------------------- subprocesses
def test_install_detectron2_leaves_existing_install_alone():
    r = _run([os.path.join(REPO, "tools", "install_detectron2.py")], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "leaving it alone" in r.stdout
    assert not any(line.startswith("+ ") for line in r.stdout.splitlines())  # no pip command run


def test_import_registers_backbone_in_fresh_interpreter():
    code = (
        "import warnings\n"
        "import instancefcn_d2\n"
        "from detectron2.modeling import BACKBONE_REGISTRY\n"
        "from instancefcn_d2.backbone.vgg import build_vgg16_backbone\n"
        "assert BACKBONE_REGISTRY.get('build_vgg16_backbone') is build_vgg16_backbone\n"
        "import detectron2.layers, detectron2.evaluation\n"
        "print('OK')\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("OK")
    # the torch.jit.script deprecation FutureWarning is silenced
    assert "torch.jit.script" not in r.stderr, r.stderr
