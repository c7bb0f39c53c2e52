"""Two gloo CPU processes through train_net's own launch path.

``launch_any_device(worker, 2)`` (what ``train_net.py --num-gpus 2`` does on a machine without
2 GPUs) starts 2 processes with DistributedDataParallel via ``cpu_ddp_support``; each runs
``train_net.setup`` + ``train_net.Trainer`` for every quick-start model (the paper's pyramid,
VGG-16-FPN and ResNet-50-FPN), one after the other in the same two processes. The worker also writes what
``train_net.py`` does not: rank 1's parameters, and the evaluation of the final model by one
process over the whole test set. For each model:

* 3 DDP steps (one image per rank per step) run: detectron2's DDP (``find_unused_parameters``
  False) fails on the second step if some trainable parameter gets no gradient (an FPN level
  built but not read), and after them the parameters are identical on both ranks;
* the end-of-training evaluation (``SegmentProposalEvaluator`` under ``inference_on_dataset``,
  the test set sharded over the 2 ranks and gathered on rank 0) gives exactly the AR that one
  process computes alone over all images with the same model.
"""
import faulthandler
import json
import logging
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "vgg16_pyramid": os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml"),
    "vgg16_fpn": os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-FPN-synthetic.yaml"),
    "r50_fpn": os.path.join(REPO, "configs", "quickstart", "InstanceFCN-R50-FPN-synthetic.yaml"),
}
HANG_GUARD_S = 300  # a hung collective ends the test run with tracebacks instead of hanging CI


def opts(model, out_dir):
    return [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.INSTANCEFCN.WINDOW_SIZE", "11",
        "MODEL.INSTANCEFCN.TEST_SCALES", "[64, 96]" if model == "vgg16_pyramid" else "[96]",
        "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "160",
        "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "100", "TEST.DETECTIONS_PER_IMAGE", "100",
        "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "('synthetic_tiny_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0",
        "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "1",
        "OUTPUT_DIR", str(out_dir / "train" / model),
    ]


def worker(out_dir):
    """Runs in each launched process: train and evaluate every model, write what the test reads."""
    sys.path.insert(0, REPO)
    import train_net  # imports instancefcn_d2 before detectron2
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import SequentialSampler
    import detectron2.utils.comm as comm
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from detectron2.engine import default_argument_parser
    from detectron2.evaluation import inference_on_dataset
    from instancefcn_d2.data import InstanceFCNDatasetMapper
    from instancefcn_d2.evaluation import SegmentProposalEvaluator

    for model_name, config in CONFIGS.items():
        args = default_argument_parser().parse_args(["--config-file", config, *opts(model_name, out_dir)])
        cfg = train_net.setup(args)
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()  # ends with the evaluation on DATASETS.TEST, sharded over the ranks
        rank, name = comm.get_rank(), cfg.DATASETS.TEST[0]
        model = trainer.model
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        torch.save({k: v.detach().clone() for k, v in inner.state_dict().items()},
                   out_dir / f"{model_name}_rank{rank}.pth")
        info = {"world_size": comm.get_world_size(), "ddp": isinstance(model, DistributedDataParallel),
                "shard_len": len(train_net.Trainer.build_test_loader(cfg, name))}
        if comm.is_main_process():
            info["ar_2proc"] = trainer._last_eval_results
            dicts = DatasetCatalog.get(name)
            loader = build_detection_test_loader(dicts, mapper=InstanceFCNDatasetMapper(cfg, False),
                                                 sampler=SequentialSampler(range(len(dicts))))
            info["num_images"] = len(dicts)
            info["ar_1proc"] = inference_on_dataset(inner, loader, SegmentProposalEvaluator(name, distributed=False))
        with open(out_dir / f"{model_name}_rank{rank}.json", "w") as f:
            json.dump(info, f)
        comm.synchronize()


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Both models trained and evaluated by 2 gloo processes: the folder of their outputs, and
    the log records of the launch."""
    from instancefcn_d2.engine import launch_any_device

    out = tmp_path_factory.mktemp("ddp")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("instancefcn_d2").addHandler(handler)
    mp = pytest.MonkeyPatch()
    mp.setenv("INSTANCEFCN_SYNTHETIC_ROOT", str(out / "synthetic"))  # inherited by the spawned processes
    faulthandler.dump_traceback_later(HANG_GUARD_S, exit=True)
    try:
        launch_any_device(worker, 2, num_machines=1, machine_rank=0, dist_url="auto", args=(out,))
    finally:
        faulthandler.cancel_dump_traceback_later()
        mp.undo()
        logging.getLogger("instancefcn_d2").removeHandler(handler)
    return out, [r.getMessage() for r in records]


@pytest.mark.parametrize("model", list(CONFIGS))
def test_two_gloo_processes_train_in_lockstep_and_evaluate_like_one(launched, model):
    out, messages = launched
    assert any("launching 2 CPU processes (gloo)" in m for m in messages)

    info = [json.load(open(out / f"{model}_rank{r}.json")) for r in range(2)]
    assert all(i["world_size"] == 2 and i["ddp"] for i in info)
    assert sorted(i["shard_len"] for i in info) == [1, 2]  # 3 val images split over the ranks

    p0, p1 = (torch.load(out / f"{model}_rank{r}.pth", weights_only=True) for r in range(2))
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k

    two, one = info[0]["ar_2proc"], info[0]["ar_1proc"]
    assert info[0]["num_images"] == 3
    # the trainer's results also carry the forward time per image ("inference"), which differs
    tasks = {"segm_proposals", "box_proposals", "inference"}
    if model != "vgg16_pyramid":  # feature pyramids: the AR of each level's proposals too
        tasks |= {"segm_proposals_per_level", "box_proposals_per_level"}
    assert set(two) == tasks
    two.pop("inference")
    assert json.dumps(two, sort_keys=True) == json.dumps(one, sort_keys=True)  # NaN-safe equality
    assert two["box_proposals"]["AR@100"] > 0  # a non-trivial number to agree on
