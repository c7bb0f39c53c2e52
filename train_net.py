#!/usr/bin/env python
"""Train and evaluate InstanceFCN with Detectron2's trainer.

    python train_net.py --config-file configs/InstanceFCN-VGG16-COCO.yaml --num-gpus 8
    python train_net.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume   # continue from output/last_checkpoint
    python train_net.py --config-file ... --dataset mine_train=mine/train.json:mine/images \
        DATASETS.TRAIN '("mine_train",)'             # your own COCO JSON, no code (docs/custom_data.md)

Evaluation uses the class-agnostic SegmentProposalEvaluator (mask and box AR@10/100/1000;
open-world keys TEST.PROPOSAL_EVAL_CATEGORY_IDS / PROPOSAL_BUDGET_RULE, docs/open_world.md);
the results also go to OUTPUT_DIR/proposal_ar.json. ``--num-gpus N`` without N GPUs runs N
CPU processes (gloo).
"""
import instancefcn_d2  # noqa: F401  (registers the model; must precede detectron2 imports)
from instancefcn_d2.config import get_project_cfg
from instancefcn_d2.data.cli_datasets import DatasetArgumentError, add_dataset_argument, register_dataset_args
from instancefcn_d2.data.datasets import project_dataset_names, register_project_datasets_main_first
from instancefcn_d2.engine import Trainer, check_config, launch_any_device, save_results

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger


def argument_parser():
    return add_dataset_argument(default_argument_parser())


def setup(args):
    # before DATASETS is read; args from detectron2's own parser have no --dataset
    register_dataset_args(getattr(args, "dataset", ()), reserved=project_dataset_names())
    cfg = get_project_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures detectron2's and fvcore's loggers; ours (evaluator table, data
    # warnings) go to the same console and OUTPUT_DIR/log.txt.
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="instancefcn_d2")
    register_project_datasets_main_first(cfg)  # generates the synthetic data on first use
    check_config(cfg, training=not args.eval_only, resume=args.resume, config_file=args.config_file)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
            save_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    parser = argument_parser()
    args = parser.parse_args()
    try:  # a bad --dataset fails here, before any process starts
        register_dataset_args(args.dataset, reserved=project_dataset_names())
    except DatasetArgumentError as e:
        parser.error(str(e))
    launch_any_device(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
