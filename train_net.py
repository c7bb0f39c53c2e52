#!/usr/bin/env python
"""Train and evaluate InstanceFCN with Detectron2's trainer.

    python train_net.py --config-file configs/InstanceFCN-VGG16-COCO.yaml --num-gpus 8
    python train_net.py --config-file configs/quickstart/InstanceFCN-VGG16-synthetic.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume   # continue from output/last_checkpoint

Evaluation uses the class-agnostic SegmentProposalEvaluator (mask and box AR@10/100/1000).
"""
import json
import logging
import os
from collections import OrderedDict

import instancefcn_d2  # noqa: F401  (registers the model; must precede detectron2 imports)
from instancefcn_d2 import add_instancefcn_config
from instancefcn_d2.data import InstanceFCNDatasetMapper, register_project_datasets
from instancefcn_d2.checkpoint import AtomicDetectionCheckpointer
from instancefcn_d2.engine import (
    check_config,
    cpu_ddp_support,
    explain_nonfinite_loss,
    launch_any_device,
    merge_config,
)
from instancefcn_d2.evaluation import SegmentProposalEvaluator, TimedModel, drop_undefined

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, TrainerBase, default_argument_parser, default_setup, hooks
from detectron2.evaluation import inference_on_dataset, verify_results
from detectron2.utils.logger import setup_logger


class Trainer(DefaultTrainer):
    """DefaultTrainer with InstanceFCN's data mapper and the segment-proposal evaluator.

    Also: checkpoints are written atomically (``AtomicDetectionCheckpointer``) and hold the
    optimizer state, so ``--resume`` after a kill continues with the same momentum buffers
    and LR schedule; a NaN/inf loss stops training with hints on the cause.
    """

    def __init__(self, cfg):
        with cpu_ddp_support():  # --num-gpus N on a CPU-only machine runs N gloo processes
            super().__init__(cfg)

    def build_hooks(self):
        # DefaultTrainer.__init__ creates self.checkpointer, then calls build_hooks(), which
        # hands it to PeriodicCheckpointer: swap in the atomic one (same model, directory and
        # checkpointables) before the hooks are built.
        old = self.checkpointer
        self.checkpointer = AtomicDetectionCheckpointer(
            old.model, old.save_dir, save_to_disk=old.save_to_disk, **old.checkpointables
        )
        ret = super().build_hooks()
        # detectron2's EvalHook stores every result as a float scalar and rejects None (an area
        # range without ground truth): it gets the defined values, _last_eval_results keeps all.
        for i, hook in enumerate(ret):
            if isinstance(hook, hooks.EvalHook):
                ret[i] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self._test_and_save_results)
        return ret

    def _test_and_save_results(self):
        self._last_eval_results = self.test(self.cfg, self.model)
        return drop_undefined(self._last_eval_results)

    def state_dict(self):
        # This detectron2's DefaultTrainer saves only the iteration and the LR scheduler;
        # the optimizer (SGD momentum buffers) lives in the inner SimpleTrainer.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        inner = state_dict.pop("_trainer", None)
        TrainerBase.load_state_dict(self, state_dict)  # iteration + hooks (LR scheduler)
        log = logging.getLogger("instancefcn_d2.train_net")
        if inner is None:
            log.warning(
                "The checkpoint has no optimizer state (written before train_net.py saved it): "
                "SGD momentum restarts from zero."
            )
            return
        self._trainer.load_state_dict(inner)
        n = sum(1 for st in self.optimizer.state.values() if "momentum_buffer" in st)
        log.info(
            f"Restored the trainer state of iteration {self.iter}: optimizer ({n} momentum "
            "buffers) and LR scheduler."
        )

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:
            raise explain_nonfinite_loss(self.cfg, e, self.checkpointer.get_checkpoint_file()) from e

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=InstanceFCNDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=InstanceFCNDatasetMapper(cfg, False))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test plus ``results["inference"]["s_per_image"]`` (the model's
        forward time per image), without detectron2's csv print (its "{:.4f}" cannot format
        the None of an area range without ground truth; the evaluator logs its own table)."""
        results = OrderedDict()
        for idx, name in enumerate(cfg.DATASETS.TEST):
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            timed = TimedModel(model)
            res = inference_on_dataset(timed, cls.build_test_loader(cfg, name), evaluator)
            if res:
                res["inference"] = {"s_per_image": timed.seconds_per_image(),
                                    "images": sum(timed.images)}
            results[name] = res
        return next(iter(results.values())) if len(results) == 1 else results

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return SegmentProposalEvaluator(dataset_name, output_dir=output_folder,
                                        mask_threshold=cfg.MODEL.INSTANCEFCN.MASK_THRESHOLD)


def setup(args):
    cfg = get_cfg()
    add_instancefcn_config(cfg)
    merge_config(cfg, args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # default_setup configures detectron2's and fvcore's loggers; ours (evaluator table, data
    # warnings) go to the same console and OUTPUT_DIR/log.txt.
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="instancefcn_d2")
    # Synthetic data is generated on first use: by the main process alone, the others wait
    # (with N processes writing the same folder at once, files could be deleted mid-write).
    if not comm.is_main_process():
        comm.synchronize()
    register_project_datasets(cfg)
    if comm.is_main_process():
        comm.synchronize()
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
            save_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    res = getattr(trainer, "_last_eval_results", None)
    if res and comm.is_main_process():
        save_results(cfg, res)
    return res


def save_results(cfg, results):
    """Final AR table (and the per-image inference time) as JSON beside the checkpoints:
    OUTPUT_DIR/proposal_ar.json; an area range without ground truth is null."""
    path = os.path.join(cfg.OUTPUT_DIR, "proposal_ar.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    logging.getLogger("instancefcn_d2").info(f"Proposal AR written to {path}")


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch_any_device(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
