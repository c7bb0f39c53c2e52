"""Feature-pyramid levels (issue 23): each level's stride and cell centre as the network
really has them, the loss over the cells a level really has, every trainable parameter
reached by a level, and per-level counts in the training log."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import instancefcn_d2  # noqa: F401
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.utils.events import EventStorage

from instancefcn_d2 import InstanceFCN
from instancefcn_d2.assembling import assemble, cell_index_map, cells_on_map
from instancefcn_d2.backbone import VGG16, cell_offsets
from instancefcn_d2.backbone.inspection import build_backbone_skeleton
from instancefcn_d2.engine.preflight import check_config, check_levels_reach_parameters
from instancefcn_d2.losses import mask_loss
from instancefcn_d2.scale_coverage import level_strides
from instancefcn_d2.targets import window_boxes, window_boxes_at, window_grid_size

from .test_model import object_input, tiny_model

QUICKSTARTS = ["configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",
               "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
               "configs/quickstart/InstanceFCN-R50-FPN-synthetic.yaml"]


# ------------------------------------------------------------------ fix 2: strides that hold
@pytest.mark.parametrize("fpn_in", [["conv3", "conv4", "conv5"], ["conv4", "conv5"]])
def test_vgg_fpn_every_level_has_the_size_of_its_stride(project_cfg, fpn_in):
    # With FPN inputs conv4, conv5 the top block used to pool p3 (stride 8): "p5" came out at
    # stride 16 while declaring 32.
    cfg = project_cfg("configs/InstanceFCN-VGG16-FPN-COCO.yaml",
                      ["MODEL.FPN.IN_FEATURES", str(fpn_in), "MODEL.VGG.OUT_FEATURES", str(fpn_in)])
    backbone = build_backbone_skeleton(cfg)
    out = backbone(torch.zeros(1, 3, 96, 160, device="meta"))
    for name, shape in backbone.output_shape().items():
        assert tuple(out[name].shape[-2:]) == (math.ceil(96 / shape.stride), math.ceil(160 / shape.stride)), name
    assert max(s.stride for s in backbone.output_shape().values()) == 32


class LyingBackbone(Backbone):
    """Declares stride 16 for a stride-8 map (as the old VGG-16-FPN top block did)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return {"p5": self.conv(F.avg_pool2d(x, 8))}

    def output_shape(self):
        return {"p5": ShapeSpec(channels=8, stride=16)}


def test_model_rejects_a_level_whose_map_is_not_its_declared_stride():
    model = tiny_model(backbone=LyingBackbone(), in_features=["p5"])
    with pytest.raises(ValueError, match=r"'p5' declares stride 16.* map is 8x8 for a 64x64 padded input"):
        model([object_input()])
    with pytest.raises(ValueError, match="declares stride 16"):
        model.eval()([{"image": object_input()["image"]}])


# ----------------------------------------------- fix 4: where a cell is, probed in the network
def _positive(backbone):
    """Every conv weight the same positive value, biases 0: on a zero input an impulse reaches
    exactly the cells whose receptive field holds it."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return backbone.double().eval()


def probed_cell_centre(backbone, feature, stride, height, width):
    """Pixel index of the receptive-field centre of cell 0 of ``feature``, from impulses.

    One image per impulse column x0 in [X, X + stride]; cell j responds when
    ``c_j - R <= x0 <= c_j + R`` with ``c_j = c_0 + j * stride``. Where the last responding cell
    changes, ``x0 = c_j - R``; where the first one changes, ``x0 - 1 = c_j' + R``.
    """
    X = width // 2
    xs = list(range(X, X + stride + 1))
    x = torch.zeros(len(xs), 3, height, width, dtype=torch.float64)
    for i, x0 in enumerate(xs):
        x[i, :, :, x0] = 1.0
    with torch.no_grad():
        resp = (backbone(x)[feature] != 0).any(dim=1).any(dim=1)  # (B, w): cells that see the impulse
    first = [int(r.nonzero().min()) for r in resp]
    last = [int(r.nonzero().max()) for r in resp]
    i = next(i for i in range(1, len(xs)) if last[i] != last[i - 1])
    left = xs[i] - last[i] * stride  # c_0 - R
    i = next(i for i in range(1, len(xs)) if first[i] != first[i - 1])
    right = xs[i] - 1 - (first[i] - 1) * stride  # c_0 + R
    return (left + right) / 2


@pytest.mark.parametrize("arch, feature, stride", [
    ("resnet", "res2", 4), ("resnet", "res3", 8), ("vgg", "conv3", 4), ("vgg", "conv4", 8),
])
def test_declared_cell_centre_is_the_receptive_field_centre(project_cfg, arch, feature, stride):
    # Independent reference: the centre of the receptive field, probed with impulses. ResNet's
    # cells sit at j * s (detectron2's anchor OFFSET 0.0), VGG-16's at (j + 1/2) * s; pixel i
    # spans [i, i + 1) (detectron2's box coordinates), so pixel index c is at c + 1/2.
    if arch == "resnet":
        cfg = project_cfg("configs/InstanceFCN-R50-FPN-COCO.yaml", ["MODEL.WEIGHTS", ""])
        height, width = 1, 256
        bottom_up = build_resnet_backbone(project_cfg("configs/InstanceFCN-R50-FPN-COCO.yaml", [
            "MODEL.RESNETS.OUT_FEATURES", f"['{feature}']"]), ShapeSpec(channels=3))  # stages up to it
    else:
        cfg = project_cfg("configs/InstanceFCN-VGG16-FPN-COCO.yaml", ["MODEL.WEIGHTS", ""])
        height, width = stride, 256
        bottom_up = VGG16(out_features=[feature], conv5_dilation=1)
    centre = probed_cell_centre(_positive(bottom_up), feature, stride, height, width) + 0.5
    declared = cell_offsets(bottom_up)[feature] * stride
    assert abs(centre - declared) <= 0.5, (centre, declared)
    # The FPN level built on this feature (p{log2 s}) is where its lateral input is.
    fpn = build_backbone_skeleton(cfg)
    assert cell_offsets(fpn)[f"p{int(math.log2(stride))}"] == cell_offsets(fpn.bottom_up)[feature]


@pytest.mark.parametrize("config, top", [("configs/InstanceFCN-R50-FPN-COCO.yaml", "p6"),
                                         ("configs/InstanceFCN-VGG16-FPN-COCO.yaml", "p5")])
def test_top_block_level_cell_centre(project_cfg, config, top):
    # LastLevelMaxPool probed on its own: output cell j reads input cell `src[j]`, so it is
    # centred where that cell is: (src[j] + o_in) * s_in.
    backbone = build_backbone_skeleton(project_cfg(config, ["MODEL.WEIGHTS", ""]))
    offsets, shapes = cell_offsets(backbone), backbone.output_shape()
    below = f"p{int(top[1:]) - 1}"
    s_in, s_out = shapes[below].stride, shapes[top].stride
    x = torch.eye(8)[:, None, None, :]  # impulse at input column i, one image each
    (out,) = LastLevelMaxPool()(x)
    for j in range(out.shape[-1]):
        src = int(out[:, 0, 0, j].nonzero())
        assert (src + offsets[below]) * s_in == (j + offsets[top]) * s_out


def test_resnet_fpn_model_places_windows_on_cell_centres(project_cfg):
    # R50-FPN windows (training grid and inference boxes) are centred at j * s on every level;
    # VGG-16's at (j + 1/2) * s.
    cfg = project_cfg("configs/quickstart/InstanceFCN-R50-FPN-synthetic.yaml",
                      ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.INSTANCEFCN.INSTANCE_CHANNELS", "16",
                       "MODEL.INSTANCEFCN.OBJECTNESS_CHANNELS", "16", "MODEL.INSTANCEFCN.TEST_SCALES", "[64]",
                       "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "5"])
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    assert model.cell_offsets == [0.0] * len(model.in_features)
    sel = model.select_windows([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])[0]
    centres = (sel.window_boxes[:, :2] + sel.window_boxes[:, 2:]) / 2
    strides = torch.tensor(model.strides, dtype=torch.float32)[sel.levels][:, None]
    assert torch.equal(centres / strides, (centres / strides).round())
    # The training grid: a window belongs to the image when its centre j * s is inside it.
    assert window_grid_size((64, 64), 16, 0.0) == (4, 4) and window_grid_size((64, 64), 16, 0.5) == (4, 4)
    assert window_grid_size((66, 66), 16, 0.0) == (5, 5) and window_grid_size((66, 66), 16, 0.5) == (4, 4)


def test_window_boxes_at_equals_the_full_grid_rows():
    ys, xs = torch.tensor([0, 3, 5, 5]), torch.tensor([0, 7, 2, 9])
    for offset in (0.0, 0.5):
        grid = window_boxes(6, 10, 8, 7, offset)
        assert torch.equal(window_boxes_at(ys, xs, 8, 7, offset), grid[ys * 10 + xs])
        centre = (grid[:, :2] + grid[:, 2:]) / 2
        assert torch.equal(centre[3 * 10 + 7], torch.tensor([(7 + offset) * 8, (3 + offset) * 8]))


# ------------------------------------------------------------------ item 8: odd windows only
def test_even_window_size_is_rejected_clearly(project_cfg):
    with pytest.raises(ValueError, match="WINDOW_SIZE must be odd"):
        tiny_model(window_size=6)
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",
                      ["MODEL.INSTANCEFCN.WINDOW_SIZE", "20", "MODEL.WEIGHTS", ""])
    with pytest.raises(ValueError, match="WINDOW_SIZE must be odd"):
        check_config(cfg, training=False, check_files=False)


def test_missing_level_is_reported_once_with_the_config_key():
    # from_config no longer repeats the check: plain arguments get the same message.
    with pytest.raises(ValueError, match=r"MODEL.INSTANCEFCN.IN_FEATURES \['p9'\]: \['p9'\] not among"):
        tiny_model(in_features=["p9"])


# ---------------------------------------------------------- fix 5: off-map cells in the loss
def naive_mask_loss(score_maps, windows, targets, m, normalization, num_sampled):
    """Loop over windows and cells; a cell off the feature map is skipped, not read as 0."""
    _, kk, h, w = score_maps.shape
    cells = cell_index_map(m, int(round(kk ** 0.5)))
    total, counted = 0.0, 0
    for (b, y, x), t in zip(windows, targets):
        for u in range(m):
            for v in range(m):
                r, c = y - m // 2 + u, x - m // 2 + v
                if 0 <= r < h and 0 <= c < w:
                    z = score_maps[b, cells[u, v], r, c]
                    total = total + F.binary_cross_entropy_with_logits(z, t[u, v])
                    counted += 1
    return total / (counted if normalization == "pixel" else num_sampled)


@pytest.mark.parametrize("normalization", ["window", "pixel"])
def test_mask_loss_counts_only_cells_on_the_map(normalization):
    torch.manual_seed(0)
    m, k = 7, 3
    maps = torch.randn(2, k * k, 6, 9, dtype=torch.float64, requires_grad=True)
    windows = [(0, 0, 0), (1, 5, 8), (0, 3, 4), (1, 2, 1)]  # two corners, one inside, one at the edge
    b, ys, xs = (torch.tensor(c) for c in zip(*windows))
    targets = (torch.rand(len(windows), m, m, dtype=torch.float64) > 0.5).double()
    ours = mask_loss(assemble(maps, b, ys, xs, m), targets, maps, normalization, 10,
                     cells_on_map(ys, xs, 6, 9, m))
    ref = naive_mask_loss(maps, windows, targets, m, normalization, 10)
    torch.testing.assert_close(ours, ref)
    g_ours, = torch.autograd.grad(ours, maps)
    g_ref, = torch.autograd.grad(ref, maps)
    torch.testing.assert_close(g_ours, g_ref)


def test_model_mask_loss_ignores_off_map_cells():
    # A 40-px object in the image corner: its one positive window (2, 2) of the tiny model
    # (7 cells of 8 px, centred at pixel 20) spans [-8, 48): row and column -1 are off the map.
    # Score maps of +20 everywhere: an on-map cell costs 20 where the target is 0 (row or
    # column 5, [40, 48)) and ~0 where it is 1; an off-map cell would read 0 and cost ln 2.
    model = tiny_model(mask_loss_normalization="pixel")
    with torch.no_grad():
        for p in model.instance_branch.parameters():
            p.zero_()
        model.instance_branch.score_maps.bias.fill_(20.0)
    with EventStorage() as storage:
        loss = model([object_input(boxes=((0, 0, 40, 40),))])["loss_mask"]
        assert storage.histories()["instancefcn/num_pos_windows"].latest() == 1
    on_map, background = 6 * 6, 6 * 6 - 5 * 5
    assert loss.item() == pytest.approx(background * 20.0 / on_map, rel=1e-6)


# ---------------------------------------------------- fix 3: every parameter reaches a level
def test_preflight_rejects_backbone_parameters_no_level_reaches(project_cfg):
    cfg = project_cfg("configs/quickstart/InstanceFCN-R50-FPN-synthetic.yaml",
                      ["MODEL.INSTANCEFCN.IN_FEATURES", "['p2', 'p3', 'p4']"])
    with pytest.raises(ValueError, match=r"reach none of these trainable backbone parameters: \['fpn_output5"):
        check_levels_reach_parameters(cfg)


@pytest.mark.parametrize("config", QUICKSTARTS)
def test_every_quickstart_reaches_every_trainable_parameter(project_cfg, config):
    check_levels_reach_parameters(project_cfg(config))


# --------------------------------------------------------------- fix 6: levels in the log
def test_training_logs_positives_and_negatives_per_level(project_cfg):
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
                      ["MODEL.WEIGHTS", "", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.INSTANCEFCN.INSTANCE_CHANNELS",
                       "16", "MODEL.INSTANCEFCN.OBJECTNESS_CHANNELS", "16", "MODEL.INSTANCEFCN.BATCH_SIZE_PER_IMAGE",
                       "64"])
    from detectron2.modeling import build_model

    model = build_model(cfg)
    # 48-px and 96-px squares: canonical on p2 and p3 (windows of 84 and 168 px).
    inp = object_input(h=192, w=192, boxes=((24, 24, 72, 72), (80, 80, 176, 176)))
    with EventStorage() as storage:
        model([inp, object_input(h=192, w=192, boxes=((24, 24, 72, 72),), seed=1)])
        logged = {k: v.latest() for k, v in storage.histories().items()}
    pos = {f: logged[f"instancefcn/num_pos_{f}"] for f in model.in_features}
    neg = {f: logged[f"instancefcn/num_neg_{f}"] for f in model.in_features}
    assert sum(pos.values()) == pytest.approx(logged["instancefcn/num_pos_windows"])
    assert sum(pos.values()) + sum(neg.values()) == pytest.approx(logged["instancefcn/num_sampled_windows"])
    assert pos["p2"] > 0 and pos["p3"] > 0 and pos["p4"] == 0


# ------------------------------------------------ item 8: strides without building weights
@BACKBONE_REGISTRY.register()
def build_device_recording_backbone(cfg, input_shape):
    """A backbone that records the device its parameters are created on."""
    layer = nn.Conv2d(3, 8, 1)
    build_device_recording_backbone.devices.append(layer.weight.device.type)
    return LyingBackbone()


build_device_recording_backbone.devices = []


def test_scale_coverage_reads_strides_without_building_weights(project_cfg):
    cfg = project_cfg("configs/quickstart/InstanceFCN-VGG16-synthetic.yaml",
                      ["MODEL.BACKBONE.NAME", "build_device_recording_backbone",
                       "MODEL.INSTANCEFCN.IN_FEATURES", "['p5']"])
    assert level_strides(cfg) == (16,)
    assert build_device_recording_backbone.devices[-1] == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_losses_and_windows_stay_on_cuda():
    model = tiny_model().cuda()
    with EventStorage():
        losses = model([object_input(), object_input(boxes=((0, 0, 40, 40),), seed=1)])
    assert all(v.device.type == "cuda" for v in losses.values())
    sel = model.eval().select_windows([{"image": object_input()["image"]}])[0]
    assert sel.window_boxes.device.type == "cuda"
