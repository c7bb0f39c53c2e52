"""Train one side, then score it with ``SegmentProposalEvaluator``, in this process.

InstanceFCN trains with the project's ``Trainer`` (as ``train_net.py``); the peers with the same
trainer but detectron2's own ``DatasetMapper`` (their input recipe), every category mapped to
class 0 (``ROI_HEADS.NUM_CLASSES 1``: class-agnostic). Both are scored by the same evaluator and
timed the same way (training wall clock; the model's forward per image at inference).
"""
import logging
import time

import torch

from detectron2.data import DatasetMapper
from detectron2.utils.env import seed_all_rng

from instancefcn_d2.data import register_project_datasets
from instancefcn_d2.data.mapper import has_rle_object_masks
from instancefcn_d2.data.object_crop import object_boxes, place_crop_on_objects, set_crop_objects
from instancefcn_d2.engine import Trainer, check_config

__all__ = ["ClassAgnosticDatasetMapper", "PeerTrainer", "train_and_score"]

logger = logging.getLogger("instancefcn_d2.peers")


class ClassAgnosticDatasetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` with every instance's ``gt_classes`` set to 0; an image
    with RLE masks (label images converted to COCO, e.g. the microscopy sets) gets
    ``BitMasks``, which detectron2 only does when told (``INPUT.MASK_FORMAT``) for all images;
    ``INPUT.CROP.AROUND_OBJECT`` places the training crop on an object, as for InstanceFCN."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configured_mask_format = self.instance_mask_format

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if is_train:  # the same input recipe as InstanceFCN's where the project adds to detectron2's
            place_crop_on_objects(cfg, ret["augmentations"])
        return ret

    def __call__(self, dataset_dict):
        if self.is_train:
            set_crop_objects(self.augmentations, lambda: object_boxes(dataset_dict.get("annotations", ())))
        rle = has_rle_object_masks(dataset_dict.get("annotations", ()))
        self.instance_mask_format = "bitmask" if rle else self.configured_mask_format
        out = super().__call__(dataset_dict)
        if "instances" in out:
            out["instances"].gt_classes = torch.zeros_like(out["instances"].gt_classes)
        return out


class PeerTrainer(Trainer):
    """``Trainer`` (evaluator, timing, atomic checkpoints) with detectron2's data mapper, class-agnostic."""

    mapper_class = ClassAgnosticDatasetMapper


def train_and_score(cfg, peer):
    """Train ``cfg`` (frozen config; its DATASETS.TEST is scored after training, not during),
    then score it. Returns ``{"mask": AR dict or None, "box": AR dict, "train_s",
    "infer_s_per_image", "diverged": bool}``; a NaN/inf loss gives ``diverged`` and no AR."""
    trainer_cls = PeerTrainer if peer else Trainer
    register_project_datasets(cfg)
    if not peer:
        check_config(cfg, training=True)
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.DATASETS.TEST = ()  # scored below, outside the training time
    train_cfg.freeze()
    seed_all_rng(cfg.SEED)
    trainer = trainer_cls(train_cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    try:
        trainer.train()
    except FloatingPointError as e:
        logger.warning(f"{cfg.OUTPUT_DIR}: training diverged at lr {cfg.SOLVER.BASE_LR}: {str(e).splitlines()[0]}")
        return {"mask": None, "box": None, "train_s": round(time.perf_counter() - start, 1),
                "infer_s_per_image": None, "diverged": True}
    train_s = round(time.perf_counter() - start, 1)
    model = trainer.model
    del trainer  # its data loader workers
    res = trainer_cls.test(cfg, model)
    return {"mask": res.get("segm_proposals"), "box": res["box_proposals"], "train_s": train_s,
            "infer_s_per_image": res["inference"]["s_per_image"], "diverged": False}
