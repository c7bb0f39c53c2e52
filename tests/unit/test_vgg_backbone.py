"""VGG-16 backbone (instancefcn_d2/backbone/vgg.py): torchvision equivalence, shapes/strides of
both variants, the dilated conv5's receptive field, FREEZE_AT and the config builder."""
import math

import pytest
import torch
import torch.nn as nn

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.backbone.vgg import VGG16, VGG16_BLOCKS, build_vgg16_backbone

ALL = ["conv1", "conv2", "conv3", "conv4", "conv5"]
CHANNELS = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
STRIDES = {
    1: {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 16},
    2: {"conv1": 1, "conv2": 2, "conv3": 4, "conv4": 8, "conv5": 8},
}
# torchvision vgg16().features indices of the 13 convs, in order.
TV_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
OUR_CONVS = [f"conv{b}_{c}" for b, (n, _) in enumerate(VGG16_BLOCKS, 1) for c in range(1, n + 1)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tv_features():
    """torchvision VGG-16 features[:30] (conv1_1 .. relu after conv5_3) with seeded random
    weights and non-zero biases."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1234)
    feats = torchvision.models.vgg16(weights=None).features[:30].eval()
    with torch.no_grad():
        for i in TV_CONV_IDX:
            feats[i].bias.normal_(0.0, 0.1)
    return feats


def _copy_tv_into_ours(tv_feats, ours):
    assert len(TV_CONV_IDX) == len(OUR_CONVS) == 13
    with torch.no_grad():
        for idx, name in zip(TV_CONV_IDX, OUR_CONVS):
            src, dst = tv_feats[idx], getattr(ours, name)
            assert isinstance(src, nn.Conv2d)
            assert dst.weight.shape == src.weight.shape, name
            dst.weight.copy_(src.weight)  # as-is: no RGB/BGR flip here
            dst.bias.copy_(src.bias)


# --------------------------------------------------------------------------- equivalence
def test_stride16_matches_torchvision_features(tv_features):
    ours = VGG16(out_features=["conv5"], conv5_dilation=1).eval()
    _copy_tv_into_ours(tv_features, ours)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = tv_features(x)
        out = ours(x)
    assert set(out) == {"conv5"}
    assert out["conv5"].shape == ref.shape == (1, 512, 4, 6)
    assert ref.abs().max() > 0.1  # non-degenerate activations
    scale = ref.abs().max().item()
    torch.testing.assert_close(out["conv5"], ref, rtol=1e-4, atol=1e-4 * max(1.0, scale))


def test_stride16_intermediate_blocks_match_torchvision(tv_features):
    # conv{b} is the ReLU output of each block's last conv (before the block's pool).
    ours = VGG16(out_features=ALL, conv5_dilation=1).eval()
    _copy_tv_into_ours(tv_features, ours)
    # index of the ReLU after the last conv of each block in torchvision's features
    tv_block_end = {"conv1": 3, "conv2": 8, "conv3": 15, "conv4": 22, "conv5": 29}
    x = torch.randn(2, 3, 48, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = ours(x)
        for name, end in tv_block_end.items():
            ref = tv_features[: end + 1](x)
            scale = max(1.0, ref.abs().max().item())
            torch.testing.assert_close(out[name], ref, rtol=1e-4, atol=1e-4 * scale, msg=name)


# --------------------------------------------------------------------------- shapes / strides
@pytest.mark.parametrize("dilation", [1, 2])
def test_output_shape_strides_and_channels(dilation):
    m = VGG16(out_features=ALL, conv5_dilation=dilation)
    shapes = m.output_shape()
    assert list(shapes) == ALL
    for name in ALL:
        assert isinstance(shapes[name], ShapeSpec)
        assert shapes[name].channels == CHANNELS[name], name
        assert shapes[name].stride == STRIDES[dilation][name], name


def test_output_shape_only_lists_requested_features():
    m = VGG16(out_features=["conv3", "conv5"], conv5_dilation=2)
    assert set(m.output_shape()) == {"conv3", "conv5"}
    assert m.output_shape()["conv5"].stride == 8


def test_dilated_224_gives_28x28_conv5():
    m = VGG16(out_features=ALL, conv5_dilation=2).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 224, 224))
    assert list(out) == ALL
    for name in ALL:
        s = STRIDES[2][name]
        assert out[name].shape == (1, CHANNELS[name], 224 // s, 224 // s), name
    assert out["conv5"].shape == (1, 512, 28, 28)
    assert torch.isfinite(out["conv5"]).all()
    assert (out["conv5"] >= 0).all()  # after ReLU


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("hw", [(100, 130), (37, 53)])
def test_non_multiple_input_sizes_floor(dilation, hw):
    H, W = hw
    m = VGG16(out_features=ALL, conv5_dilation=dilation).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, H, W))
    for name in ALL:
        s = STRIDES[dilation][name]
        assert out[name].shape[-2:] == (H // s, W // s), (name, out[name].shape)
    if dilation == 2:
        assert out["conv5"].shape[-2:] == (math.floor(H / 8), math.floor(W / 8))


def test_only_requested_features_returned_and_early_exit():
    m = VGG16(out_features=["conv2"], conv5_dilation=2).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 32, 32))
    assert list(out) == ["conv2"]
    assert out["conv2"].shape == (1, 128, 16, 16)


def test_forward_rejects_non_4d_input():
    m = VGG16(conv5_dilation=2)
    with pytest.raises(ValueError):
        m(torch.randn(3, 32, 32))


def test_batch_independence():
    m = VGG16(out_features=["conv5"], conv5_dilation=2).eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        both = m(x)["conv5"]
        first = m(x[:1])["conv5"]
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- receptive field
def _influence_rows(p, size, dilation):
    """Rows [lo, hi] of conv5 that input row ``p`` can influence, from the layer definitions
    (3x3 'same' convs; 2x2/s2 pools; pool4 3x3/s1/p1 and dilated conv5 when dilation == 2)."""
    lo = hi = p

    def conv(d):
        nonlocal lo, hi
        lo, hi = max(lo - d, 0), min(hi + d, size - 1)

    def pool2():
        nonlocal lo, hi, size
        size //= 2
        lo, hi = lo // 2, min(hi // 2, size - 1)

    for b, (n, _) in enumerate(VGG16_BLOCKS, 1):
        if b > 1:
            if b == 5 and dilation == 2:
                conv(1)  # 3x3 stride-1 pool: same reach as a 3x3 conv
            else:
                pool2()
        for _ in range(n):
            conv(dilation if b == 5 else 1)
    return lo, hi


@pytest.mark.parametrize("dilation", [2, 1])
def test_receptive_field_of_one_pixel_is_centred(dilation):
    """Perturb one input pixel; the conv5 rows that change must be exactly the theoretical
    footprint, centred on the pixel's position / stride (positive weights, constant input,
    float64, so ReLU/max-pool never hide a change and nothing is lost to rounding)."""
    stride = 8 if dilation == 2 else 16
    H, W, p = 816, 16, 411  # tall enough that image borders never reach the footprint
    m = VGG16(out_features=["conv5"], conv5_dilation=dilation).double().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in OUR_CONVS:
            conv = getattr(m, name)
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.rand(conv.weight.shape, generator=g, dtype=torch.float64) * 2 / fan_in)
            conv.bias.zero_()
        x = torch.ones(1, 3, H, W, dtype=torch.float64)
        x2 = x.clone()
        x2[0, :, p, W // 2] += 1.0
        y, y2 = m(x)["conv5"], m(x2)["conv5"]
    assert y.shape[-2:] == (H // stride, W // stride)
    changed = ((y2 - y).abs().amax(dim=(0, 1, 3)) > 0).nonzero().flatten().tolist()
    assert changed, "perturbation did not reach conv5"
    lo, hi = changed[0], changed[-1]
    assert changed == list(range(lo, hi + 1)), "changed rows are not contiguous"
    assert (lo, hi) == _influence_rows(p, H, dilation)
    assert lo <= p // stride <= hi  # the cell containing the pixel responds
    # cell i is centred on input row stride * i + (stride - 1) / 2
    centre = (p - (stride - 1) / 2) / stride
    assert abs((lo + hi) / 2 - centre) <= 0.5, (lo, hi, centre)
    if dilation == 2:
        # theoretical receptive field 204 px ~ 25 cells at stride 8; without the dilation
        # (pool4 stride 1 + plain conv5) it would be only 156 px ~ 19 cells.
        assert hi - lo + 1 >= 25
    else:
        assert hi - lo + 1 in (12, 13)  # 196 px at stride 16


def test_dilated_conv5_layers_have_dilation_2_and_same_params():
    a, b = VGG16(conv5_dilation=1), VGG16(conv5_dilation=2)
    for name in OUR_CONVS:
        ca, cb = getattr(a, name), getattr(b, name)
        assert ca.weight.shape == cb.weight.shape
        if name.startswith("conv5"):
            assert cb.dilation == (2, 2) and cb.padding == (2, 2)
            assert ca.dilation == (1, 1) and ca.padding == (1, 1)
        else:
            assert ca.dilation == cb.dilation == (1, 1)
    # same parameter names => one checkpoint serves both variants
    assert list(a.state_dict()) == list(b.state_dict())
    assert sum(p.numel() for p in a.parameters()) == 14_714_688


# --------------------------------------------------------------------------- freezing
def _block_params(m, block):
    return [p for layer in m.stage_layers[block] for p in getattr(m, layer).parameters()]


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_at(freeze_at):
    m = VGG16(out_features=ALL, conv5_dilation=2, freeze_at=freeze_at)
    for b, name in enumerate(ALL, 1):
        params = _block_params(m, name)
        assert len(params) == 2 * len(m.stage_layers[name])  # weight + bias per conv
        expect = b > freeze_at
        assert all(p.requires_grad == expect for p in params), (name, freeze_at)
    n_frozen = sum(1 for p in m.parameters() if not p.requires_grad)
    assert n_frozen == 2 * sum(n for n, _ in VGG16_BLOCKS[:freeze_at])


@pytest.mark.parametrize("freeze_at", [0, 2, 5])
def test_freeze_at_with_bn_uses_frozen_batchnorm(freeze_at):
    m = VGG16(out_features=ALL, conv5_dilation=2, norm="BN", freeze_at=freeze_at)
    for b, name in enumerate(ALL, 1):
        for layer in m.stage_layers[name]:
            conv = getattr(m, layer)
            assert conv.bias is None  # norm replaces the bias
            if b <= freeze_at:
                assert isinstance(conv.norm, FrozenBatchNorm2d), layer
                assert all(not p.requires_grad for p in conv.parameters()), layer
            else:
                assert isinstance(conv.norm, nn.BatchNorm2d), layer
                assert all(p.requires_grad for p in conv.parameters()), layer
    # Frozen BN normalises with its stored statistics even in train mode (ordinary BN would use
    # the batch's) and never updates them: train-mode output == eval-mode output, stats unchanged.
    first = getattr(m, m.stage_layers["conv1"][0]).norm
    with torch.no_grad():
        first.running_mean.uniform_(-2.0, 2.0)
        first.running_var.uniform_(0.5, 4.0)
    stats = (first.running_mean.clone(), first.running_var.clone())
    x = torch.randn(2, 3, 32, 32) * 3 + 1
    with torch.no_grad():
        out_train = m.train()(x)["conv1"]
        out_eval = m.eval()(x)["conv1"]
    if freeze_at >= 1:
        torch.testing.assert_close(out_train, out_eval)
        assert torch.equal(first.running_mean, stats[0]) and torch.equal(first.running_var, stats[1])
    else:  # trainable BN: batch statistics in train mode, and the running stats move
        assert not torch.allclose(out_train, out_eval, atol=1e-3)
        assert not torch.equal(first.running_mean, stats[0])


def test_freeze_method_can_be_called_later():
    m = VGG16(conv5_dilation=2)
    assert all(p.requires_grad for p in m.parameters())
    assert m.freeze(3) is m
    assert not any(p.requires_grad for p in _block_params(m, "conv3"))
    assert all(p.requires_grad for p in _block_params(m, "conv4"))


def test_frozen_blocks_get_no_gradient():
    m = VGG16(out_features=["conv3"], conv5_dilation=2, freeze_at=2)
    out = m(torch.randn(1, 3, 16, 16))["conv3"]
    out.sum().backward()
    assert all(p.grad is None for p in _block_params(m, "conv1") + _block_params(m, "conv2"))
    assert all(p.grad is not None for p in _block_params(m, "conv3"))


# --------------------------------------------------------------------------- config / errors
def _cfg(**vgg):
    cfg = get_project_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_vgg16_backbone"
    for k, v in vgg.items():
        setattr(cfg.MODEL.VGG, k, v)
    return cfg


def test_registered_in_backbone_registry():
    assert BACKBONE_REGISTRY.get("build_vgg16_backbone") is build_vgg16_backbone


def test_config_defaults():
    cfg = _cfg()
    assert cfg.MODEL.VGG.CONV5_DILATION == 2
    assert list(cfg.MODEL.VGG.OUT_FEATURES) == ["conv5"]
    bb = build_backbone(cfg)
    assert isinstance(bb, VGG16)
    assert bb.output_shape() == {"conv5": ShapeSpec(channels=512, stride=8)}
    # detectron2's default FREEZE_AT is 2: conv1 and conv2 frozen
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert not any(p.requires_grad for p in _block_params(bb, "conv2"))
    assert all(p.requires_grad for p in _block_params(bb, "conv3"))


def test_build_backbone_honours_config():
    cfg = _cfg(OUT_FEATURES=["conv3", "conv5"], CONV5_DILATION=1, NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 3
    bb = build_backbone(cfg)
    assert isinstance(bb, VGG16)
    assert bb.output_shape() == {
        "conv3": ShapeSpec(channels=256, stride=4),
        "conv5": ShapeSpec(channels=512, stride=16),
    }
    for b, name in enumerate(ALL, 1):
        for layer in bb.stage_layers[name]:
            conv = getattr(bb, layer)
            assert isinstance(conv.norm, FrozenBatchNorm2d if b <= 3 else nn.BatchNorm2d)
            assert all(p.requires_grad == (b > 3) for p in conv.parameters())
    bb.eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 64))
    assert out["conv3"].shape == (1, 256, 16, 16)
    assert out["conv5"].shape == (1, 512, 4, 4)


def test_build_backbone_uses_input_channels():
    cfg = _cfg()
    bb = build_vgg16_backbone(cfg, ShapeSpec(channels=1))
    assert bb.conv1_1.weight.shape == (64, 1, 3, 3)


@pytest.mark.parametrize(
    "key, value",
    [("CONV5_DILATION", 3), ("OUT_FEATURES", ["conv6"]), ("OUT_FEATURES", ["res5"])],
)
def test_bad_config_values_raise(key, value):
    cfg = _cfg(**{key: value})
    with pytest.raises(ValueError):
        build_backbone(cfg)


@pytest.mark.parametrize("freeze_at", [-1, 6])
def test_bad_freeze_at_raises(freeze_at):
    with pytest.raises(ValueError):
        VGG16(freeze_at=freeze_at)
    cfg = _cfg()
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    with pytest.raises(ValueError):
        build_backbone(cfg)
