"""The ``InstanceFCN`` meta-architecture: backbone -> (instance branch, objectness branch) on
one or more feature levels -> assembling, trained on sampled windows.

With one level (the paper's stride-8 VGG-16 ``conv5``) object sizes are reached with an image
pyramid at test time (``test_scales``); with a feature pyramid (``in_features`` such as
``p2..p6``) the two branches are shared across levels, as detectron2's RPN head is, a window
of ``m`` cells on a level of stride ``s`` covers ``m * s`` pixels, and one scale suffices.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage

from .assembling import assemble, cells_on_map
from .backbone.cell_offsets import level_cell_offsets
from .heads import InstanceBranch, ObjectnessBranch
from .inference import check_ranking, proposals_from_windows
from .mask_rendering import MASK_FORMATS
from .losses import MASK_LOSS_NORMALIZATIONS, mask_loss, objectness_loss
from .targets import (WindowLabeler, check_window_size, inside_windows, mask_targets, sample_windows,
                      window_boxes, window_boxes_at, window_grid_size)

__all__ = ["InstanceFCN"]


@META_ARCH_REGISTRY.register()
class InstanceFCN(nn.Module):
    """Class-agnostic instance segment proposals (Dai et al., ECCV 2016).

    Training input: detectron2 dataset dicts with ``image`` and ``instances`` (``gt_boxes``,
    ``gt_masks``), optionally ``crowd_boxes`` (see ``InstanceFCNDatasetMapper``). Returns
    ``{"loss_objectness", "loss_mask"}``.

    Inference returns ``[{"instances": Instances}]`` in the ``height`` x ``width`` frame of
    each input (its own size when absent), with ``pred_boxes``, ``scores`` (descending),
    ``objectness_logits``, ``levels`` and the masks in ``mask_format``: ``pred_masks`` ``(N, H, W)``
    bool ("bitmask"), ``pred_masks_rle`` ("rle") or ``pred_masks`` ``(N, 1, m, m)`` +
    ``pred_mask_boxes`` ("roi"); see :mod:`instancefcn_d2.mask_rendering`.

    Stages carry ``torch.profiler.record_function`` labels (``instancefcn.backbone``,
    ``.heads``, ``.assemble``, ``.select``, ``.render``) so profilers and the benchmark can
    time them without patching the model.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        instance_branch: nn.Module,
        objectness_branch: nn.Module,
        labeler: WindowLabeler,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        in_features: Sequence[str] = ("conv5",),
        window_size: int = 21,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        objectness_loss_weight: float = 1.0,
        mask_loss_weight: float = 1.0,
        mask_loss_normalization: str = "window",
        test_scales: Sequence[int] = (119, 178, 267, 400, 600, 900),
        test_max_size: int = 1500,
        topk_per_scale: int = 1000,
        mask_threshold: float = 0.5,
        nms_thresh: float = 0.8,
        detections_per_image: int = 1000,
        mask_format: str = "bitmask",
        nms_per_level_first: bool = False,
        cell_offsets: Optional[Sequence[float]] = None,
        nms_type: str = "box",
        score: str = "objectness",
        matrix_nms_kernel: str = "gaussian",
        matrix_nms_sigma: float = 2.0,
        matrix_nms_score_thresh: float = 0.0,
    ):
        """``cell_offsets``: per level of ``in_features``, where its cells sit (cell ``j``
        centred at pixel ``(j + offset) * stride``); by default what the backbone declares
        (:mod:`instancefcn_d2.backbone.cell_offsets`: 0.5 on VGG-16, 0 on ResNet)."""
        super().__init__()
        shapes = backbone.output_shape()
        in_features = list(in_features)
        missing = [f for f in in_features if f not in shapes]
        if not in_features or missing:
            raise ValueError(
                f"MODEL.INSTANCEFCN.IN_FEATURES {in_features}: {missing or 'none'} not among the backbone's "
                f"outputs {sorted(shapes)} (see MODEL.VGG.OUT_FEATURES / MODEL.FPN)"
            )
        if len({shapes[f].channels for f in in_features}) != 1:
            raise ValueError(f"IN_FEATURES {in_features} must have equal channels (the branches are shared)")
        check_window_size(window_size)
        if window_size < instance_branch.k:
            raise ValueError(f"WINDOW_SIZE ({window_size}) must be >= K ({instance_branch.k})")
        if not test_scales:
            raise ValueError("MODEL.INSTANCEFCN.TEST_SCALES must list at least one scale")
        if mask_loss_normalization not in MASK_LOSS_NORMALIZATIONS:
            raise ValueError(f"MASK_LOSS_NORMALIZATION must be one of {MASK_LOSS_NORMALIZATIONS}, "
                             f"got {mask_loss_normalization!r}")
        self.backbone = backbone
        self.instance_branch = instance_branch
        self.objectness_branch = objectness_branch
        self.labeler = labeler
        self.in_features = in_features
        self.strides = [shapes[f].stride for f in in_features]
        self.cell_offsets = [float(o) for o in (
            level_cell_offsets(backbone, in_features) if cell_offsets is None else cell_offsets)]
        if len(self.cell_offsets) != len(in_features):
            raise ValueError(f"cell_offsets {self.cell_offsets}: need one per level of {in_features}")
        self.window_size = window_size
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.loss_weights = {"loss_objectness": objectness_loss_weight, "loss_mask": mask_loss_weight}
        self.mask_loss_normalization = mask_loss_normalization
        self.test_scales = tuple(test_scales)
        self.test_max_size = test_max_size
        self.topk_per_scale = topk_per_scale
        self.mask_threshold = mask_threshold
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        if mask_format not in MASK_FORMATS:
            raise ValueError(f"MODEL.INSTANCEFCN.MASK_FORMAT {mask_format!r}: expected one of {MASK_FORMATS}")
        self.mask_format = mask_format
        self.nms_per_level_first = nms_per_level_first
        check_ranking(nms_type, score, nms_per_level_first)
        self.ranking = {"nms_type": nms_type, "score": score, "matrix_nms_kernel": matrix_nms_kernel,
                        "matrix_nms_sigma": matrix_nms_sigma, "matrix_nms_score_thresh": matrix_nms_score_thresh}
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        c = cfg.MODEL.INSTANCEFCN
        shapes = backbone.output_shape()
        # Levels that do not exist are reported by __init__; the branches need some width first.
        channels = shapes[c.IN_FEATURES[0]].channels if c.IN_FEATURES and c.IN_FEATURES[0] in shapes else 1
        return {
            "backbone": backbone,
            "instance_branch": InstanceBranch(cfg, channels),
            "objectness_branch": ObjectnessBranch(cfg, channels),
            "labeler": WindowLabeler(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "in_features": c.IN_FEATURES,
            "window_size": c.WINDOW_SIZE,
            "batch_size_per_image": c.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": c.POSITIVE_FRACTION,
            "objectness_loss_weight": c.OBJECTNESS_LOSS_WEIGHT,
            "mask_loss_weight": c.MASK_LOSS_WEIGHT,
            "mask_loss_normalization": c.MASK_LOSS_NORMALIZATION,
            "test_scales": c.TEST_SCALES,
            "test_max_size": c.TEST_MAX_SIZE,
            "topk_per_scale": c.TOPK_PER_SCALE,
            "mask_threshold": c.MASK_THRESHOLD,
            "nms_thresh": c.NMS_THRESH,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_format": c.MASK_FORMAT,
            "nms_per_level_first": c.NMS_PER_LEVEL_FIRST,
            "nms_type": c.NMS_TYPE,
            "score": c.SCORE,
            "matrix_nms_kernel": c.MATRIX_NMS_KERNEL,
            "matrix_nms_sigma": c.MATRIX_NMS_SIGMA,
            "matrix_nms_score_thresh": c.MATRIX_NMS_SCORE_THRESH,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(self.backbone.size_divisibility, *self.strides)

    # ------------------------------------------------------------------ shared
    def _heads(self, images: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Normalised ``(N, 3, H, W)`` -> per level: score maps ``(N, k*k, h, w)`` and
        objectness ``(N, h, w)``."""
        with record_function("instancefcn.backbone"):
            features = self.backbone(images)
        self._check_level_sizes(features, images.shape[-2:])
        with record_function("instancefcn.heads"):
            levels = [features[f] for f in self.in_features]
            return [self.instance_branch(x) for x in levels], [self.objectness_branch(x) for x in levels]

    def _check_level_sizes(self, features: Dict[str, torch.Tensor], padded_size):
        """Every level's map must be ``ceil(padded input / stride)``: windows, labels and boxes
        are placed with the declared stride, so a level whose stride is not what its backbone
        declares would train and infer with every window off by that factor, silently."""
        for f, s in zip(self.in_features, self.strides):
            actual = tuple(features[f].shape[-2:])
            expected = tuple(math.ceil(n / s) for n in padded_size)
            if actual != expected:
                raise ValueError(
                    f"Backbone level {f!r} declares stride {s} (output_shape()), but its map is "
                    f"{actual[0]}x{actual[1]} for a {padded_size[0]}x{padded_size[1]} padded input; a level of "
                    f"stride {s} is {expected[0]}x{expected[1]}. Fix the backbone's output_shape() or the "
                    "layer that makes this level (for an FPN: its top block's in_feature)."
                )

    def _normalize(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = ImageList.from_tensors(
            [self._normalize(x["image"]) for x in batched_inputs], self.size_divisibility
        )
        score_maps, objectness = self._heads(images.tensor)
        return self.losses(score_maps, objectness, batched_inputs, images.image_sizes)

    # ---------------------------------------------------------------- training
    def losses(self, score_maps: List[torch.Tensor], objectness: List[torch.Tensor],
               batched_inputs: List[Dict], image_sizes: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """Label the windows of all levels of each image together, sample
        ``batch_size_per_image`` of them per image, assemble the positives level by level.

        ``score_maps[l]`` ``(N, k*k, h_l, w_l)``, ``objectness[l]`` ``(N, h_l, w_l)``.
        """
        n = score_maps[0].shape[0]
        device = score_maps[0].device
        shapes = [o.shape[1:] for o in objectness]
        windows = torch.cat([window_boxes(h, w, s, self.window_size, o, device=device)
                             for (h, w), s, o in zip(shapes, self.strides, self.cell_offsets)])
        level_of = torch.cat([torch.full((h * w,), l, dtype=torch.long, device=device) for l, (h, w) in enumerate(shapes)])
        start = [0]
        for h, w in shapes:
            start.append(start[-1] + h * w)
        obj_all = torch.cat([o.reshape(n, -1) for o in objectness], dim=1)  # (N, sum_l h_l*w_l)

        obj_idx, obj_labels, positives, targets, negatives = [], [], [], [], []
        for i, (inp, size) in enumerate(zip(batched_inputs, image_sizes)):
            inst = inp.get("instances")
            inst = inst.to(device) if inst is not None else None  # gt_masks too: targets on one device
            gt_boxes = inst.gt_boxes.tensor if inst is not None and len(inst) else windows[:0]
            crowd = inp.get("crowd_boxes")
            crowd = crowd.tensor.to(device) if crowd is not None else windows[:0]
            inside = torch.cat([inside_windows(h, w, size, s, o, device=device)
                                for (h, w), s, o in zip(shapes, self.strides, self.cell_offsets)])
            labels, matched = self.labeler(windows, gt_boxes, crowd, inside)
            pos, neg = sample_windows(labels, self.batch_size_per_image, self.positive_fraction)
            obj_idx.append(torch.cat([pos, neg]) + i * obj_all.shape[1])
            obj_labels.append(torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
            negatives.append(neg)
            if pos.numel():
                positives.append((i, pos))
                targets.append(mask_targets(inst.gt_masks, matched[pos], windows[pos], self.window_size))

        obj_idx, obj_labels = torch.cat(obj_idx), torch.cat(obj_labels)
        losses = {"loss_objectness": objectness_loss(obj_all.reshape(-1)[obj_idx], obj_labels)}
        if positives:
            b = torch.cat([torch.full_like(p, i) for i, p in positives])
            pos = torch.cat([p for _, p in positives])
            lvl = level_of[pos]
            parts, on_map, order = [], [], []
            with record_function("instancefcn.assemble"):
                for l in lvl.unique().tolist():
                    sel = (lvl == l).nonzero().squeeze(1)
                    cell, (h, w) = pos[sel] - start[l], shapes[l]
                    ys, xs = cell // w, cell % w
                    parts.append(assemble(score_maps[l], b[sel], ys, xs, self.window_size))
                    on_map.append(cells_on_map(ys, xs, h, w, self.window_size))
                    order.append(sel)
            back = torch.cat(order).argsort()  # back to the order of the targets
            logits, weights = torch.cat(parts)[back], torch.cat(on_map)[back]
            # score_maps[0] keeps the (shared) instance branch in the graph when there is no positive.
            losses["loss_mask"] = mask_loss(logits, torch.cat(targets), score_maps[0],
                                            self.mask_loss_normalization, obj_idx.numel(), weights)
        else:
            losses["loss_mask"] = mask_loss(score_maps[0][:0], score_maps[0][:0], score_maps[0])
        num_pos = sum(p.numel() for _, p in positives)
        _put_scalar("instancefcn/num_pos_windows", num_pos / n)
        _put_scalar("instancefcn/num_sampled_windows", obj_idx.numel() / n)
        # Sampled windows per level and image: does every level get positives and negatives?
        pos_all = torch.cat([p for _, p in positives]) if positives else level_of[:0]
        for f, p_l, n_l in zip(self.in_features,
                               torch.bincount(level_of[pos_all], minlength=len(shapes)).tolist(),
                               torch.bincount(level_of[torch.cat(negatives)], minlength=len(shapes)).tolist()):
            _put_scalar(f"instancefcn/num_pos_{f}", p_l / n)
            _put_scalar(f"instancefcn/num_neg_{f}", n_l / n)
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    # --------------------------------------------------------------- inference
    def pyramid_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """``(h, w)`` of the image at each test scale: shorter side = the scale, longer <= max size."""
        sizes = []
        for s in self.test_scales:
            f = min(s / min(height, width), self.test_max_size / max(height, width))
            sizes.append((max(1, int(round(height * f))), max(1, int(round(width * f)))))
        return sizes

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Window selection for the whole batch, then each image's rendering."""
        selected = self.select_windows(batched_inputs)
        with record_function("instancefcn.render"):
            return [{"instances": proposals_from_windows(
                w, mask_threshold=self.mask_threshold, nms_thresh=self.nms_thresh,
                max_proposals=self.detections_per_image, mask_format=self.mask_format,
                nms_per_level_first=self.nms_per_level_first, **self.ranking)} for w in selected]

    def select_windows(self, batched_inputs: List[Dict]) -> List[Instances]:
        """The top ``topk_per_scale`` windows of every level and test scale, assembled.

        The images of a batch go through the backbone together, once per test scale. Returns,
        per image, ``Instances`` of its output frame (``height`` x ``width``) with
        ``mask_logits`` ``(P, m, m)``, ``window_boxes`` ``(P, 4)`` in that frame,
        ``objectness_logits`` ``(P,)``, ``levels`` ``(P,)`` and ``scales`` ``(P,)`` (test-scale
        index): the input of any mask renderer.
        """
        images = []
        for inp in batched_inputs:
            image = inp["image"]
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0] or min(image.shape[1:]) < 1:
                raise ValueError(f"Expected a (C={self.pixel_mean.shape[0]}, H, W) image, got {tuple(image.shape)}")
            images.append(image.to(self.device, torch.float32))
        out_sizes = [(int(inp.get("height", im.shape[1])), int(inp.get("width", im.shape[2])))
                     for inp, im in zip(batched_inputs, images)]
        parts = [[] for _ in images]  # per image: (logits, objectness, boxes, levels) of each level/scale
        for scale in range(len(self.test_scales)):
            resized = []
            for image in images:
                in_h, in_w = image.shape[1:]
                h, w = self.pyramid_sizes(in_h, in_w)[scale]
                resized.append(F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False,
                                             antialias=h < in_h)[0] if (h, w) != (in_h, in_w) else image)
            batch = ImageList.from_tensors([self._normalize(x) for x in resized], self.size_divisibility)
            score_maps, objectness = self._heads(batch.tensor)
            with record_function("instancefcn.select"):
                for i, (h, w) in enumerate(batch.image_sizes):
                    out_h, out_w = out_sizes[i]
                    scale_xy = torch.tensor([out_w / w, out_h / h, out_w / w, out_h / h], device=self.device)
                    for l, (maps, obj) in enumerate(zip(score_maps, objectness)):
                        part = self._select_level(maps[i:i + 1], obj[i], l, (h, w), scale_xy)
                        parts[i].append(part + (torch.full_like(part[3], scale),))
        results = []
        for (out_h, out_w), image_parts in zip(out_sizes, parts):
            r = Instances((out_h, out_w))
            r.mask_logits, r.objectness_logits, r.window_boxes, r.levels, r.scales = (
                torch.cat(x) for x in zip(*image_parts))
            results.append(r)
        return results

    def _select_level(self, score_maps, objectness, level, image_size, scale_xy):
        """Top-K windows of one level of one image: ``(1, k*k, fh, fw)`` maps, ``(fh, fw)``
        objectness -> (logits ``(K, m, m)``, objectness ``(K,)``, boxes ``(K, 4)``, levels ``(K,)``)."""
        fh, fw = objectness.shape
        stride, offset = self.strides[level], self.cell_offsets[level]
        # The windows that belong to the image: the same set training labels (targets.window_grid_size).
        vh, vw = (min(a, b) for a, b in zip((fh, fw), window_grid_size(image_size, stride, offset)))
        obj = objectness[:vh, :vw].reshape(-1)
        top = obj.topk(min(self.topk_per_scale, obj.numel())).indices
        ys, xs = top // vw, top % vw
        with record_function("instancefcn.assemble"):
            logits = assemble(score_maps, torch.zeros_like(ys), ys, xs, self.window_size)
        boxes = window_boxes_at(ys, xs, stride, self.window_size, offset) * scale_xy
        return logits, obj[top], boxes, torch.full_like(top, level)


def _put_scalar(name: str, value: float):
    """Log to detectron2's event storage when training inside a trainer (no-op otherwise)."""
    try:
        get_event_storage().put_scalar(name, value)
    except AssertionError:
        pass
