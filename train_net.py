#!/usr/bin/env python
"""Train and evaluate InstanceFCN with Detectron2's trainer.

    python train_net.py --config-file configs/InstanceFCN-VGG16-COCO.yaml --num-gpus 8
    python train_net.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume   # continue from output/last_checkpoint

Evaluation uses the class-agnostic SegmentProposalEvaluator (mask and box AR@10/100/1000).
"""
import logging
import os

import instancefcn_d2  # noqa: F401  (registers the model; must precede detectron2 imports)
from instancefcn_d2 import add_instancefcn_config
from instancefcn_d2.data import InstanceFCNDatasetMapper, register_project_datasets
from instancefcn_d2.engine import check_config, cpu_ddp_support, launch_any_device, merge_config
from instancefcn_d2.evaluation import SegmentProposalEvaluator

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import verify_results


class Trainer(DefaultTrainer):
    """DefaultTrainer with InstanceFCN's data mapper and the segment-proposal evaluator."""

    def __init__(self, cfg):
        with cpu_ddp_support():  # --num-gpus N on a CPU-only machine runs N gloo processes
            super().__init__(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=InstanceFCNDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=InstanceFCNDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return SegmentProposalEvaluator(dataset_name, output_dir=output_folder)


def setup(args):
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    register_project_datasets(cfg)
    check_config(cfg, training=not args.eval_only, resume=args.resume)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger("instancefcn_d2").setLevel(logging.INFO)
    launch_any_device(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
