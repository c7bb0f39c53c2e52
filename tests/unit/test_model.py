"""The InstanceFCN meta-architecture (instancefcn_d2/meta_arch.py): inference contract and
coordinate frames, top-K-only assembling, training losses (empty images, crowds, loss
weights), DistributedDataParallel with an object-free rank, the real VGG-16 config wiring,
and the test pyramid sizes.

Most tests use a tiny backbone (one avg-pool to stride 8 + one conv) so they run in
milliseconds; one module-scoped fixture builds the real VGG-16 model from the config."""
import os
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import instancefcn_d2  # noqa: F401  (compat shims + registrations, before detectron2)
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from instancefcn_d2 import InstanceFCN
from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.assembling import assemble_dense
from instancefcn_d2.heads import InstanceBranch, ObjectnessBranch
from instancefcn_d2.targets import WindowLabeler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRIDE, M, K = 8, 7, 3  # tiny model: 7 x 7 windows of 8-px cells (56 px)


# --------------------------------------------------------------------------- helpers
class TinyBackbone(Backbone):
    """avg-pool to stride 8, then one 3x3 conv: "conv5", 8 channels, stride 8."""

    cell_offsets = {"conv5": 0.5}  # 8x8 average pooling tiles the input: cell j covers [8j, 8j + 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)

    def forward(self, x):
        return {"conv5": F.relu(self.conv(F.avg_pool2d(x, STRIDE)))}

    def output_shape(self):
        return {"conv5": ShapeSpec(channels=8, stride=STRIDE)}


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(
        backbone=TinyBackbone(),
        instance_branch=InstanceBranch(in_channels=8, k=K, channels=16),
        objectness_branch=ObjectnessBranch(in_channels=8, channels=16),
        # canonical object: 40 px of the 56-px window; positive offset 4 px, negative 8 px
        labeler=WindowLabeler(canonical_ratio=40.0 / 56.0, pos_center_offset=4.0 / 56.0,
                              neg_center_offset=8.0 / 56.0, pos_scale_log2=0.25, neg_scale_log2=1.0),
        pixel_mean=[100.0, 110.0, 120.0],
        pixel_std=[50.0, 50.0, 50.0],
        window_size=M,
        batch_size_per_image=32,
        test_scales=(64,),
        test_max_size=1000,
    )
    args.update(kw)
    return InstanceFCN(**args)


class RecordingLabeler(WindowLabeler):
    """The tiny model's labeler, keeping the ``(P,)`` labels of every call (the labeler is a
    constructor argument of the model: a public seam)."""

    def __init__(self):
        super().__init__(canonical_ratio=40.0 / 56.0, pos_center_offset=4.0 / 56.0,
                         neg_center_offset=8.0 / 56.0, pos_scale_log2=0.25, neg_scale_log2=1.0)
        self.labels = []

    def __call__(self, *args, **kwargs):
        labels, matched = super().__call__(*args, **kwargs)
        self.labels.append(labels.clone())
        return labels, matched


def rand_image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def object_input(h=64, w=64, boxes=((8, 8, 48, 48),), bitmask=False, seed=0, crowd=None):
    """An image with axis-aligned rectangular objects. [8, 48) is centred on cell 3 (pixel 28)
    and is 40 px wide: a canonical positive for window (3, 3) of the tiny model."""
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    if bitmask:
        bm = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            bm[i, y0:y1, x0:x1] = True
        inst.gt_masks = BitMasks(bm)
    else:
        inst.gt_masks = PolygonMasks([[[x0, y0, x1, y0, x1, y1, x0, y1]] for x0, y0, x1, y1 in boxes])
    d = {"image": rand_image(h, w, seed), "instances": inst}
    if crowd is not None:
        d["crowd_boxes"] = Boxes(torch.tensor(crowd, dtype=torch.float32).view(-1, 4))
    return d


def empty_input(h=64, w=64, seed=1):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.zeros(0, 4))
    inst.gt_masks = PolygonMasks([])
    return {"image": rand_image(h, w, seed), "instances": inst}


def tight_box(mask: torch.Tensor):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def check_contract(inst: Instances, height: int, width: int, max_dets: int, score: str = "objectness"):
    """``score``: the model's SCORE; with maskness the score is the objectness times a factor <= 1."""
    assert inst.image_size == (height, width)
    n = len(inst)
    assert n <= max_dets
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (n, height, width)
    s = inst.scores
    assert s.shape == (n,) and ((s >= 0) & (s <= 1)).all()
    assert (s[:-1] >= s[1:]).all()
    if score == "objectness":
        torch.testing.assert_close(inst.objectness_logits.double().sigmoid(), s)
    else:
        assert (s <= inst.objectness_logits.double().sigmoid()).all() and (s > 0).all()
    assert inst.pred_boxes.tensor.shape == (n, 4)
    for i in range(n):
        assert inst.pred_masks[i].any(), "empty masks must be dropped"
        assert inst.pred_boxes.tensor[i].tolist() == tight_box(inst.pred_masks[i])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


# --------------------------------------------------------------------------- inference
SQ_ROWS, SQ_COLS = (2, 6), (3, 7)  # feature cells of a hand-made square
PEAK = (4, 5)  # objectness peak; the window there (rows 1..7, cols 2..8) contains the square


class SquareScoreMaps(nn.Module):
    """Stands in for the instance branch: every score map +10 on each square (feature-cell
    ``(rows, cols)`` ranges), -10 elsewhere, so whatever cell a map serves, a window assembles
    the squares it contains. ``(N, C, h, w) -> (N, k*k, h, w)``."""

    def __init__(self, squares):
        super().__init__()
        self.squares = squares
        self.k = K  # read by the model (the k x k grid of the maps)

    def forward(self, x):
        n, _, fh, fw = x.shape
        maps = torch.full((n, K * K, fh, fw), -10.0)
        for rows, cols in self.squares:
            maps[:, :, rows[0]:rows[1], cols[0]:cols[1]] = 10.0
        return maps


class ObjectnessAt(nn.Module):
    """Stands in for the objectness branch: ``background`` except ``{(y, x): logit}``.
    ``(N, C, h, w) -> (N, h, w)``."""

    def __init__(self, logits, background=-20.0):
        super().__init__()
        self.logits, self.background = logits, background

    def forward(self, x):
        n, _, fh, fw = x.shape
        obj = torch.full((n, fh, fw), self.background)
        for (y, x_), v in self.logits.items():
            obj[:, y, x_] = v
        return obj


# the peak, then a few lower-ranked positions with distinct scores
PEAK_LOGITS = {PEAK: 5.0, (0, 0): -1.0, (7, 9): -2.0, (3, 4): -3.0}


def fake_branches(squares=((SQ_ROWS, SQ_COLS),), logits=PEAK_LOGITS, background=-20.0):
    """Constructor arguments of a tiny model whose branches output the hand-made maps above
    (the backbone still runs: only the shapes of its features are used)."""
    return dict(instance_branch=SquareScoreMaps(squares), objectness_branch=ObjectnessAt(logits, background))


@pytest.mark.parametrize("scale", [1, 2])
def test_inference_mask_lands_in_output_frame(scale):
    model = tiny_model(detections_per_image=5, **fake_branches()).eval()
    h, w = 64, 80  # feature map 8 x 10
    inp = {"image": rand_image(h, w)}
    if scale != 1:
        inp["height"], inp["width"] = h * scale, w * scale
    out = model([inp])
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"instances"}
    inst = out[0]["instances"]
    check_contract(inst, h * scale, w * scale, 5)
    assert len(inst) >= 1
    # the top proposal is the peak window, score sigmoid(5), mask = the square's pixels
    assert inst.scores[0].item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-6)
    s = STRIDE * scale
    # Independent reference: the square's cell probabilities bilinearly upsampled to pixels
    # (cell centres at pixel (i + 1/2) * s); the square lies inside the window, away from its edge.
    probs = torch.full((1, 1, h // STRIDE, w // STRIDE), -10.0)
    probs[..., SQ_ROWS[0]:SQ_ROWS[1], SQ_COLS[0]:SQ_COLS[1]] = 10.0
    ref = F.interpolate(probs.sigmoid(), scale_factor=s, mode="bilinear", align_corners=False)[0, 0] >= 0.5
    assert torch.equal(inst.pred_masks[0], ref)
    # i.e. the square's pixels, corners rounded by the bilinear paste
    core = torch.zeros(h * scale, w * scale, dtype=torch.bool)
    core[SQ_ROWS[0] * s:SQ_ROWS[1] * s, SQ_COLS[0] * s:SQ_COLS[1] * s] = True
    assert not (inst.pred_masks[0] & ~core).any()
    assert (inst.pred_masks[0] == core).float().mean() > 0.99
    assert inst.pred_masks[0][SQ_ROWS[0] * s + s // 2:SQ_ROWS[1] * s - s // 2, SQ_COLS[0] * s:SQ_COLS[1] * s].all()
    assert inst.pred_boxes.tensor[0].tolist() == [SQ_COLS[0] * s, SQ_ROWS[0] * s, SQ_COLS[1] * s, SQ_ROWS[1] * s]


def test_inference_non_integer_output_scale():
    model = tiny_model(detections_per_image=5, **fake_branches()).eval()
    out = model([{"image": rand_image(64, 80), "height": 96, "width": 100}])[0]["instances"]
    check_contract(out, 96, 100, 5)
    sy, sx = 96 / 64, 100 / 80
    exp = [SQ_COLS[0] * 8 * sx, SQ_ROWS[0] * 8 * sy, SQ_COLS[1] * 8 * sx, SQ_ROWS[1] * 8 * sy]
    np.testing.assert_allclose(out.pred_boxes.tensor[0].numpy(), exp, atol=1.0)


def test_inference_drops_empty_masks():
    model = tiny_model(**fake_branches(squares=())).eval()
    inst = model([{"image": rand_image(64, 80), "height": 32, "width": 40}])[0]["instances"]
    assert len(inst) == 0
    check_contract(inst, 32, 40, 1000)  # (0, 32, 40) bool masks, (0, 4) boxes, (0,) scores


def test_inference_random_model_contract_and_detection_cap():
    model = tiny_model(detections_per_image=5, test_scales=(48, 64)).eval()
    batch = [{"image": rand_image(64, 80, 3)}, {"image": rand_image(56, 40, 4), "height": 112, "width": 80}]
    out = model(batch)
    assert len(out) == 2
    check_contract(out[0]["instances"], 64, 80, 5)
    check_contract(out[1]["instances"], 112, 80, 5)
    # The cap is reached (random scores leave far more than 5 windows after NMS) ...
    assert [len(o["instances"]) for o in out] == [5, 5]
    # ... and it is what stopped them: a larger cap keeps more, and the first 5 are the same.
    wide = tiny_model(detections_per_image=50, test_scales=(48, 64)).eval()(batch)
    assert len(wide[0]["instances"]) > 5
    torch.testing.assert_close(wide[0]["instances"].scores[:5], out[0]["instances"].scores)


def test_nms_per_level_first_through_the_model():
    """Selection tags each window with its test scale; the two-pass NMS groups by it."""
    from instancefcn_d2.inference import proposals_from_windows

    image = {"image": rand_image(64, 80, 5)}
    per_scale = [len(tiny_model(test_scales=(s,)).eval().select_windows([image])[0]) for s in (48, 64, 80)]
    model = tiny_model(test_scales=(48, 64, 80)).eval()
    sel = model.select_windows([image])[0]
    assert sel.scales.bincount().tolist() == per_scale
    model.nms_per_level_first = True
    got = model([image])[0]["instances"]
    check_contract(got, 64, 80, 1000)
    ref = proposals_from_windows(sel, nms_thresh=model.nms_thresh, nms_per_level_first=True)
    torch.testing.assert_close(got.scores, ref.scores)
    # It is the grouped NMS that ran: the same windows with every scale in one group differ.
    sel.scales = torch.zeros_like(sel.scales)
    assert len(proposals_from_windows(sel, nms_thresh=model.nms_thresh, nms_per_level_first=True)) != len(got)


def test_inference_assembles_only_topk():
    model = tiny_model(topk_per_scale=4, test_scales=(64, 96)).eval()
    sel = model.select_windows([{"image": rand_image(64, 80)}])[0]
    # 4 windows assembled per test scale, out of 8 x 10 and 12 x 15 positions.
    assert sel.scales.bincount().tolist() == [4, 4] and sel.mask_logits.shape[1:] == (M, M)


def test_inference_rejects_bad_image():
    model = tiny_model().eval()
    with pytest.raises(ValueError):
        model([{"image": torch.zeros(1, 32, 32, dtype=torch.uint8)}])


# --------------------------------------------------------------------------- training
def test_training_loss_keys_finite_and_targets_wired():
    labeler = RecordingLabeler()
    model = tiny_model(labeler=labeler, mask_loss_normalization="pixel").train()
    batch = [object_input(), object_input(boxes=((16, 16, 56, 56),), bitmask=True, seed=5)]
    losses = model(batch)
    assert set(losses) == {"loss_objectness", "loss_mask"}
    for v in losses.values():
        assert v.dim() == 0 and torch.isfinite(v)
    assert losses["loss_mask"] > 0 and losses["loss_objectness"] > 0

    # image 0: the only positive window is (3, 3); image 1's object [16,56) is centred on (4, 4)
    fw = 8
    assert [(lab == 1).nonzero().flatten().tolist() for lab in labeler.labels] == [[3 * fw + 3], [4 * fw + 4]]
    # The mask loss is the mean per-pixel logistic loss of those two windows, assembled densely
    # from the score maps by the reference loop, against the exact crops of the objects.
    with torch.no_grad():
        x = torch.stack([inp["image"].float() for inp in batch])
        x = (x - torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1)) / 50.0
        dense = assemble_dense(model.instance_branch(model.backbone(x)["conv5"]), M)
    exp = torch.zeros(M, M)
    exp[1:6, 1:6] = 1  # object cells 1..5 (pixels [8, 48)) of window (3,3) = pixels [0, 56)
    ref = F.binary_cross_entropy_with_logits(torch.stack([dense[0, 3, 3], dense[1, 4, 4]]), torch.stack([exp, exp]))
    torch.testing.assert_close(losses["loss_mask"].detach(), ref)


def test_loss_weights_scale_losses():
    base = tiny_model()
    weighted = tiny_model(objectness_loss_weight=2.0, mask_loss_weight=0.5)
    weighted.load_state_dict(base.state_dict())
    batch = [object_input()]
    torch.manual_seed(11)
    l1 = base.train()(batch)
    torch.manual_seed(11)
    l2 = weighted.train()(batch)
    torch.testing.assert_close(l2["loss_objectness"], 2.0 * l1["loss_objectness"])
    torch.testing.assert_close(l2["loss_mask"], 0.5 * l1["loss_mask"])


@pytest.mark.parametrize("masks", ["polygon", "bitmask"])
def test_training_image_without_instances(masks):
    model = tiny_model().train()
    inp = empty_input()
    if masks == "bitmask":
        inp["instances"].gt_masks = BitMasks(torch.zeros(0, 64, 64, dtype=torch.bool))
    losses = model([inp])
    assert set(losses) == {"loss_objectness", "loss_mask"}
    assert losses["loss_mask"].item() == 0.0
    assert torch.isfinite(losses["loss_objectness"]) and losses["loss_objectness"] > 0
    sum(losses.values()).backward()
    for name, p in model.instance_branch.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) == 0, name
    for name, p in model.objectness_branch.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_input_without_instances_key():
    model = tiny_model().train()
    losses = model([{"image": rand_image(64, 64)}])
    assert losses["loss_mask"].item() == 0.0 and torch.isfinite(losses["loss_objectness"])


def test_training_honours_crowd_boxes_and_padding():
    labeler = RecordingLabeler()
    recorded = labeler.labels
    model = tiny_model(labeler=labeler).train()
    crowd = [0.0, 32.0, 30.0, 64.0]  # window centres x in {4, 12, 20, 28}, y in {36, ..., 60}
    # image 1 is 48 x 40: padded to 64 x 64 in the batch, windows centred on padding ignored
    with_crowd = object_input(crowd=crowd)
    losses = model([with_crowd, empty_input(48, 40)])
    assert all(torch.isfinite(v) for v in losses.values())
    lab0, lab1 = (r.view(8, 8) for r in recorded)
    assert (lab0[4:8, 0:4] == -1).all()  # centred in the crowd
    assert (lab0[0, 6:] == 0).all() and lab0[3, 3] == 1  # elsewhere: negatives, the object
    assert (lab1[:6, :5] == 0).all() and (lab1[6:] == -1).all() and (lab1[:, 5:] == -1).all()

    # the same image without the crowd: those windows are clean negatives
    recorded.clear()
    model([object_input()])
    assert (recorded[0].view(8, 8)[5:8, 0:4] == 0).all()  # (row 4 is near the object: ignored)


def test_training_all_windows_ignored():
    # a crowd over the whole image: nothing to sample, losses are zero but finite
    model = tiny_model().train()
    inp = empty_input()
    inp["crowd_boxes"] = Boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]))
    losses = model([inp])
    assert losses["loss_objectness"].item() == 0.0 and losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()


def test_constructor_checks():
    with pytest.raises(ValueError):
        tiny_model(in_features=["conv4"])
    with pytest.raises(ValueError):
        tiny_model(window_size=2)  # < k
    with pytest.raises(ValueError):
        tiny_model(test_scales=())


# --------------------------------------------------------------------------- pyramid
@pytest.mark.parametrize("hw", [(100, 300), (300, 100), (200, 200)])
def test_pyramid_sizes(hw):
    model = tiny_model(test_scales=(32, 64, 200), test_max_size=240)
    h, w = hw
    sizes = model.pyramid_sizes(h, w)
    assert len(sizes) == 3
    for s, (lh, lw) in zip((32, 64, 200), sizes):
        assert max(lh, lw) <= 240
        capped = s * max(h, w) / min(h, w) > 240
        if capped:
            assert max(lh, lw) == 240
            assert min(lh, lw) == round(240 * min(h, w) / max(h, w))
        else:
            assert min(lh, lw) == s
            assert max(lh, lw) == round(s * max(h, w) / min(h, w))
    assert sizes[2] == ((80, 240) if h < w else (240, 80) if h > w else (200, 200))


# --------------------------------------------------------------------------- DDP
def _ddp_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=40))
    try:
        model = tiny_model(seed=rank).train()  # different init: DDP must broadcast rank 0's
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=None, find_unused_parameters=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        batch = [object_input()] if rank == 0 else [empty_input()]
        torch.manual_seed(100 + rank)
        mask_losses = []
        for _ in range(3):  # a 2nd/3rd forward would raise if a reduction was left unfinished
            losses = ddp(batch)
            mask_losses.append(losses["loss_mask"].item())
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        torch.save({"params": gathered, "mask_losses": mask_losses}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_object_free_rank(tmp_path, spawn):
    world = 2
    init_file = str(tmp_path / "ddp_init")
    spawn(_ddp_worker, (world, init_file, str(tmp_path)), nprocs=world, timeout=120)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert all(v > 0 for v in r0["mask_losses"]) and all(v == 0 for v in r1["mask_losses"])
    a, b = r0["params"]
    assert torch.equal(a, b)  # identical parameters on both ranks after the steps
    torch.testing.assert_close(r1["params"][0], a)
    # and training moved them away from the initialisation of rank 0
    assert not torch.equal(a, torch.cat([p.detach().reshape(-1) for p in tiny_model(seed=0).parameters()]))


# --------------------------------------------------------------------------- real config
def vgg_cfg(**overrides):
    cfg = get_project_cfg(os.path.join(REPO, "configs", "Base-InstanceFCN-VGG16.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.INSTANCEFCN.TEST_SCALES = [64]
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    for k, v in overrides.items():
        node = cfg
        *path, last = k.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, v)
    return cfg


@pytest.fixture(scope="module")
def vgg_model():
    torch.manual_seed(0)
    return build_model(vgg_cfg())


def test_vgg_config_wiring(vgg_model):
    model = vgg_model
    assert isinstance(model, InstanceFCN)
    assert model.strides == [8] and model.window_size == 21 and model.instance_branch.k == 5
    assert model.test_scales == (64,)
    assert model.instance_branch.score_maps.out_channels == 25
    # FREEZE_AT 2: conv1_x, conv2_x frozen
    assert not model.backbone.conv2_2.weight.requires_grad and model.backbone.conv3_1.weight.requires_grad


def test_vgg_inference_contract(vgg_model):
    model = vgg_model.eval()
    img = rand_image(192, 240, 9)
    model.test_scales = (192,)  # 24 x 30 windows: more than 20 survive NMS, even untrained
    try:
        out = model([{"image": img}, {"image": img, "height": 96, "width": 120}])
    finally:
        model.test_scales = (64,)
    assert len(out) == 2
    check_contract(out[0]["instances"], 192, 240, 20)
    check_contract(out[1]["instances"], 96, 120, 20)
    # the cap (TEST.DETECTIONS_PER_IMAGE 20) is reached: a contract on zero proposals proves nothing
    assert len(out[0]["instances"]) == 20 and len(out[1]["instances"]) == 20


def test_vgg_training_step(vgg_model):
    model = vgg_model.train()
    # 96-px object centred on cell 8 (pixel 68): canonical for the 168-px window
    inp = object_input(128, 128, boxes=((20, 20, 116, 116),))
    try:
        losses = model([inp])
        assert set(losses) == {"loss_objectness", "loss_mask"}
        assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
        sum(losses.values()).backward()
        assert model.instance_branch.score_maps.weight.grad is not None
        assert model.backbone.conv5_3.weight.grad is not None
        assert model.backbone.conv1_1.weight.grad is None  # frozen
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_vgg_in_feature_not_in_backbone_raises():
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build_model(vgg_cfg(**{"MODEL.INSTANCEFCN.IN_FEATURES": ["conv4"]}))


# --------------------------------------------------------------------------- border windows
def test_border_windows_empty_in_image_do_not_take_detection_slots():
    # 96 x 120 image, 12 x 15 feature map. The three corner windows rank first but see only
    # -10 logits inside the map (their off-map cells read zero-padded logits); the square's
    # window ranks 4th. With 3 detection slots the square must still come out.
    model = tiny_model(detections_per_image=3, test_scales=(96,), **fake_branches(
        [((4, 8), (6, 10))], {(0, 0): 3.0, (0, 14): 2.0, (11, 0): 1.0, (6, 8): 0.0})).eval()
    inst = model([{"image": rand_image(96, 120)}])[0]["instances"]
    check_contract(inst, 96, 120, 3)
    assert len(inst) >= 1
    assert inst.scores[0].item() == pytest.approx(0.5)
    assert inst.pred_boxes.tensor[0].tolist() == [48.0, 32.0, 80.0, 64.0]


def test_nms_suppresses_duplicates_of_an_object_at_the_border():
    # A square on feature cells [0, 3) x [0, 3) (the image corner). Windows (0,0), (1,1), (2,2)
    # all contain it whole: the same proposal, whose tight box is the square; NMS keeps one.
    model = tiny_model(test_scales=(64,), **fake_branches(
        [((0, 3), (0, 3))], {(1, 1): 3.0, (2, 2): 2.0, (0, 0): 1.0})).eval()
    inst = model([{"image": rand_image(64, 80)}])[0]["instances"]
    check_contract(inst, 64, 80, 1000)
    assert inst.scores[0].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert inst.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 24.0, 24.0]
    whole = [i for i in range(len(inst)) if inst.pred_boxes.tensor[i].tolist() == [0.0, 0.0, 24.0, 24.0]]
    assert whole == [0]


# --------------------------------------------------------------------------- review fixes (issue 13)
@pytest.mark.parametrize("h", [57, 60, 61, 64, 65, 68, 69, 70])
def test_inference_scores_exactly_the_windows_training_labels(h):
    # Every window inference can return must be one that training labels (its centre on the
    # image), and every such window must be a candidate: for h mod 8 in 1..4 the last row's
    # centre is off the image and must not be scored (it would never have been trained).
    w = 72
    model = tiny_model(topk_per_scale=10 ** 6, test_scales=(h,), test_max_size=10 ** 4).eval()
    sel = model.select_windows([{"image": rand_image(h, w)}])[0]
    centres = (sel.window_boxes[:, :2] + sel.window_boxes[:, 2:]) / 2
    assert (centres[:, 0] < w).all() and (centres[:, 1] < h).all()
    expected = sum(1 for y in range(20) if (y + 0.5) * STRIDE < h) * sum(1 for x in range(20) if (x + 0.5) * STRIDE < w)
    assert len(sel) == expected


def test_scores_do_not_saturate_and_follow_the_logits():
    # float32 sigmoid is exactly 1.0 above logit ~16.6: three proposals of logits 30, 25, 20
    # would tie. Scores must stay distinct and in logit order.
    model = tiny_model(**fake_branches([((0, 2), (0, 2)), ((5, 7), (0, 2)), ((0, 2), (6, 8))],
                                       {(1, 1): 20.0, (6, 1): 30.0, (1, 7): 25.0}, background=-30.0)).eval()
    inst = model([{"image": rand_image(64, 64)}])[0]["instances"]
    assert inst.objectness_logits[:3].tolist() == [30.0, 25.0, 20.0]
    s = inst.scores[:3].tolist()
    assert s[0] > s[1] > s[2] and torch.sigmoid(torch.tensor(20.0)).item() == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step_on_bitmask_data():
    # RLE annotations reach the model as BitMasks on the CPU; the targets must still be built
    # on the model's device (this crashed with mixed devices before).
    model = tiny_model().to("cuda").train()
    losses = model([object_input(bitmask=True), object_input(boxes=((16, 16, 56, 56),), seed=3)])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_mask"] > 0
