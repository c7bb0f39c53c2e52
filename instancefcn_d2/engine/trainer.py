"""InstanceFCN's trainer: detectron2's ``DefaultTrainer`` with the project's data mapper, the
segment-proposal evaluator, crash-safe checkpoints that hold the optimizer state, the model's
forward time per image, and hints when the loss becomes NaN/inf."""
import json
import logging
import os
from collections import OrderedDict

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm

from ..checkpoint import AtomicDetectionCheckpointer
from ..compat import TrainerStateBackport, cpu_ddp_support
from ..data.mapper import InstanceFCNDatasetMapper
from ..evaluation import SegmentProposalEvaluator, TimedModel, drop_undefined
from ..fileio import atomic_write

__all__ = ["Trainer", "explain_nonfinite_loss", "save_results"]

logger = logging.getLogger(__name__)


class Trainer(TrainerStateBackport, DefaultTrainer):
    """DefaultTrainer with InstanceFCN's data mapper and the segment-proposal evaluator.

    Also: checkpoints are written atomically (``AtomicDetectionCheckpointer``) and hold the
    optimizer state, so ``--resume`` after a kill continues with the same momentum buffers
    and LR schedule; a NaN/inf loss stops training with hints on the cause; ``train()``
    writes the last evaluation to OUTPUT_DIR/proposal_ar.json and returns it.
    """

    mapper_class = InstanceFCNDatasetMapper  # ``(cfg, is_train)``: a subclass may bring another mapper

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

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:
            raise explain_nonfinite_loss(self.cfg, e, self.checkpointer.get_checkpoint_file()) from e

    def train(self):
        """Train; returns the last evaluation's results (None without one), also saved as JSON."""
        super().train()
        res = getattr(self, "_last_eval_results", None)
        if res and comm.is_main_process():
            save_results(self.cfg, res)
        return res

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=cls.mapper_class(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=cls.mapper_class(cfg, False))

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
        return SegmentProposalEvaluator(
            dataset_name,
            output_dir=output_folder,
            eval_category_ids=cfg.TEST.PROPOSAL_EVAL_CATEGORY_IDS,
            budget_rule=cfg.TEST.PROPOSAL_BUDGET_RULE,
            mask_threshold=cfg.MODEL.INSTANCEFCN.MASK_THRESHOLD,
        )


def save_results(cfg, results):
    """Final AR table (and the per-image inference time) as JSON beside the checkpoints:
    OUTPUT_DIR/proposal_ar.json; an area range without ground truth is null."""
    path = os.path.join(cfg.OUTPUT_DIR, "proposal_ar.json")
    atomic_write(path, lambda f: json.dump(results, f, indent=2), "w")
    logger.info(f"Proposal AR written to {path}")
    return path


def explain_nonfinite_loss(cfg, error: Exception, last_checkpoint: str = "") -> FloatingPointError:
    """detectron2's "Loss became infinite or NaN" error, with what to check and how to go on."""
    s = cfg.SOLVER
    clip = s.CLIP_GRADIENTS
    lines = [
        str(error),
        "Likely causes, most common first:",
        f"  * learning rate too high: SOLVER.BASE_LR={s.BASE_LR} (try 1/10 of it) or a longer "
        f"warmup (SOLVER.WARMUP_ITERS={s.WARMUP_ITERS});",
        "  * gradient clipping "
        + (f"is on (CLIP_TYPE={clip.CLIP_TYPE}, CLIP_VALUE={clip.CLIP_VALUE}): try a smaller CLIP_VALUE;"
           if clip.ENABLED else
           "is off: set SOLVER.CLIP_GRADIENTS.ENABLED True (CLIP_TYPE norm, CLIP_VALUE 10);"),
        f"  * MODEL.PIXEL_MEAN={list(cfg.MODEL.PIXEL_MEAN)} / PIXEL_STD={list(cfg.MODEL.PIXEL_STD)} may not "
        "match the weights (Caffe VGG-16: mean [103.939, 116.779, 123.68], std [1, 1, 1]; torchvision "
        "VGG-16: see instancefcn_d2/weights.py);",
        "  * a broken image or annotation in this batch (look for warnings above).",
    ]
    if last_checkpoint:
        lines.append(
            f"The last good checkpoint is {last_checkpoint}. With --resume the optimizer and LR "
            "schedule come back from it (a changed SOLVER.BASE_LR is ignored); to restart with new "
            f"solver settings use MODEL.WEIGHTS {last_checkpoint} and a new OUTPUT_DIR."
        )
    return FloatingPointError("\n".join(lines))
