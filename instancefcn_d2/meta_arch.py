"""The ``InstanceFCN`` meta-architecture: backbone -> (instance branch, objectness branch)
-> assembling, trained on sampled windows and run as an image pyramid at test time."""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import get_event_storage

from .assembling import assemble
from .heads import InstanceBranch, ObjectnessBranch
from .inference import proposals_from_windows
from .losses import mask_loss, objectness_loss
from .targets import WindowLabeler, mask_targets, sample_windows, window_boxes

__all__ = ["InstanceFCN"]


@META_ARCH_REGISTRY.register()
class InstanceFCN(nn.Module):
    """Class-agnostic instance segment proposals (Dai et al., ECCV 2016).

    Training input: detectron2 dataset dicts with ``image`` and ``instances`` (``gt_boxes``,
    ``gt_masks``), optionally ``crowd_boxes`` (see ``InstanceFCNDatasetMapper``). Returns
    ``{"loss_objectness", "loss_mask"}``.

    Inference returns ``[{"instances": Instances}]`` in the ``height`` x ``width`` frame of
    each input (its own size when absent), with ``pred_masks`` ``(N, H, W)`` bool,
    ``pred_boxes``, ``scores`` (descending) and ``objectness_logits``.
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
        in_feature: str = "conv5",
        window_size: int = 21,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        objectness_loss_weight: float = 1.0,
        mask_loss_weight: float = 1.0,
        test_scales: Sequence[int] = (119, 178, 267, 400, 600, 900),
        test_max_size: int = 1500,
        topk_per_scale: int = 1000,
        mask_threshold: float = 0.5,
        nms_thresh: float = 0.8,
        detections_per_image: int = 1000,
    ):
        super().__init__()
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"Backbone has no feature {in_feature!r}; it outputs {sorted(shapes)}")
        if window_size < instance_branch.k:
            raise ValueError(f"WINDOW_SIZE ({window_size}) must be >= K ({instance_branch.k})")
        if not test_scales:
            raise ValueError("MODEL.INSTANCEFCN.TEST_SCALES must list at least one scale")
        self.backbone = backbone
        self.instance_branch = instance_branch
        self.objectness_branch = objectness_branch
        self.labeler = labeler
        self.in_feature = in_feature
        self.stride = shapes[in_feature].stride
        self.window_size = window_size
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.loss_weights = {"loss_objectness": objectness_loss_weight, "loss_mask": mask_loss_weight}
        self.test_scales = tuple(test_scales)
        self.test_max_size = test_max_size
        self.topk_per_scale = topk_per_scale
        self.mask_threshold = mask_threshold
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        c = cfg.MODEL.INSTANCEFCN
        if c.IN_FEATURE not in backbone.output_shape():
            raise ValueError(
                f"MODEL.INSTANCEFCN.IN_FEATURE={c.IN_FEATURE!r} is not among the backbone's outputs "
                f"{sorted(backbone.output_shape())} (see MODEL.VGG.OUT_FEATURES)"
            )
        channels = backbone.output_shape()[c.IN_FEATURE].channels
        return {
            "backbone": backbone,
            "instance_branch": InstanceBranch(cfg, channels),
            "objectness_branch": ObjectnessBranch(cfg, channels),
            "labeler": WindowLabeler(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "in_feature": c.IN_FEATURE,
            "window_size": c.WINDOW_SIZE,
            "batch_size_per_image": c.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": c.POSITIVE_FRACTION,
            "objectness_loss_weight": c.OBJECTNESS_LOSS_WEIGHT,
            "mask_loss_weight": c.MASK_LOSS_WEIGHT,
            "test_scales": c.TEST_SCALES,
            "test_max_size": c.TEST_MAX_SIZE,
            "topk_per_scale": c.TOPK_PER_SCALE,
            "mask_threshold": c.MASK_THRESHOLD,
            "nms_thresh": c.NMS_THRESH,
            "detections_per_image": c.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(self.backbone.size_divisibility, self.stride)

    # ------------------------------------------------------------------ shared
    def _heads(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Normalised ``(N, 3, H, W)`` -> score maps ``(N, k*k, h, w)``, objectness ``(N, h, w)``."""
        feature = self.backbone(images)[self.in_feature]
        return self.instance_branch(feature), self.objectness_branch(feature)

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
    def losses(self, score_maps: torch.Tensor, objectness: torch.Tensor, batched_inputs: List[Dict],
               image_sizes: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """Sample windows per image, assemble the positives once for the whole batch.

        ``score_maps`` ``(N, k*k, h, w)``, ``objectness`` ``(N, h, w)``.
        """
        n, _, h, w = score_maps.shape
        windows = window_boxes(h, w, self.stride, self.window_size, device=score_maps.device)
        obj_idx, obj_labels, pos_b, pos_idx, targets = [], [], [], [], []
        for i, (inp, size) in enumerate(zip(batched_inputs, image_sizes)):
            inst = inp.get("instances")
            gt_boxes = inst.gt_boxes.tensor.to(self.device) if inst is not None and len(inst) else windows[:0]
            crowd = inp.get("crowd_boxes")
            crowd = crowd.tensor.to(self.device) if crowd is not None else windows[:0]
            labels, matched = self.labeler(windows, gt_boxes, crowd, size)
            pos, neg = sample_windows(labels, self.batch_size_per_image, self.positive_fraction)
            obj_idx.append(torch.cat([pos, neg]) + i * h * w)
            obj_labels.append(torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
            if pos.numel():
                pos_b.append(torch.full_like(pos, i))
                pos_idx.append(pos)
                targets.append(mask_targets(inst.gt_masks, matched[pos], windows[pos], self.window_size))

        obj_idx, obj_labels = torch.cat(obj_idx), torch.cat(obj_labels)
        losses = {"loss_objectness": objectness_loss(objectness.reshape(-1)[obj_idx], obj_labels)}
        if pos_idx:
            pos = torch.cat(pos_idx)
            logits = assemble(score_maps, torch.cat(pos_b), pos // w, pos % w, self.window_size)
            losses["loss_mask"] = mask_loss(logits, torch.cat(targets).to(logits.device), score_maps)
        else:
            losses["loss_mask"] = mask_loss(score_maps[:0], score_maps[:0], score_maps)
        num_pos = sum(p.numel() for p in pos_idx)
        _put_scalar("instancefcn/num_pos_windows", num_pos / n)
        _put_scalar("instancefcn/num_sampled_windows", obj_idx.numel() / n)
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    # --------------------------------------------------------------- inference
    def pyramid_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """``(h, w)`` of each pyramid level: shorter side = each test scale, longer <= max size."""
        sizes = []
        for s in self.test_scales:
            f = min(s / min(height, width), self.test_max_size / max(height, width))
            sizes.append((max(1, int(round(height * f))), max(1, int(round(width * f)))))
        return sizes

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [{"instances": self.inference_single(x)} for x in batched_inputs]

    def inference_single(self, inp: Dict) -> Instances:
        """One image (``(3, H, W)`` tensor in ``inp["image"]``) through the whole pyramid."""
        image = inp["image"]
        if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0] or min(image.shape[1:]) < 1:
            raise ValueError(f"Expected a (C={self.pixel_mean.shape[0]}, H, W) image, got {tuple(image.shape)}")
        in_h, in_w = image.shape[1:]
        out_h, out_w = int(inp.get("height", in_h)), int(inp.get("width", in_w))
        image = image.to(self.device, torch.float32)[None]
        all_logits, all_obj, all_windows = [], [], []
        for h, w in self.pyramid_sizes(in_h, in_w):
            level = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=h < in_h) if (h, w) != (in_h, in_w) else image
            level = ImageList.from_tensors([self._normalize(level[0])], self.size_divisibility).tensor
            score_maps, objectness = self._heads(level)
            fh, fw = objectness.shape[1:]
            # Only windows centred on the image (not on padding) are candidates.
            valid_h, valid_w = min(fh, math.ceil(h / self.stride)), min(fw, math.ceil(w / self.stride))
            obj = objectness[0, :valid_h, :valid_w].reshape(-1)
            top = obj.topk(min(self.topk_per_scale, obj.numel())).indices
            ys, xs = top // valid_w, top % valid_w
            all_logits.append(assemble(score_maps, torch.zeros_like(ys), ys, xs, self.window_size))
            all_obj.append(obj[top])
            windows = window_boxes(fh, fw, self.stride, self.window_size, device=self.device)
            scale = torch.tensor([out_w / w, out_h / h, out_w / w, out_h / h], device=self.device)
            all_windows.append(windows[ys * fw + xs] * scale)
        return proposals_from_windows(
            torch.cat(all_logits), torch.cat(all_obj), torch.cat(all_windows), (out_h, out_w),
            mask_threshold=self.mask_threshold, nms_thresh=self.nms_thresh,
            max_proposals=self.detections_per_image,
        )


def _put_scalar(name: str, value: float):
    """Log to detectron2's event storage when training inside a trainer (no-op otherwise)."""
    try:
        get_event_storage().put_scalar(name, value)
    except AssertionError:
        pass
