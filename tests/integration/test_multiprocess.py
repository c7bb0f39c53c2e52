"""Two gloo CPU processes through train_net's own launch path.

A small driver script runs ``train_net.setup`` + ``train_net.Trainer`` under
``launch_any_device(main, 2)`` (what ``train_net.py --num-gpus 2`` does on a machine without
2 GPUs): 2 processes, DistributedDataParallel via ``cpu_ddp_support``. The driver is needed
only to read what ``train_net.py`` does not write: rank 1's parameters, and the evaluation
of the final model by one process over the whole test set. It checks that

* after 3 DDP steps (one image per rank per step) the parameters are identical on both ranks;
* the end-of-training evaluation (``SegmentProposalEvaluator`` under ``inference_on_dataset``,
  the test set sharded over the 2 ranks and gathered on rank 0) gives exactly the AR that one
  process computes alone over all images with the same model.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-synthetic.yaml")
QUICKSTART_FPN = os.path.join(REPO, "configs", "quickstart", "InstanceFCN-VGG16-FPN-synthetic.yaml")

DRIVER = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import train_net  # imports instancefcn_d2 before detectron2
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import SequentialSampler
    import detectron2.utils.comm as comm
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from detectron2.engine import default_argument_parser
    from detectron2.evaluation import inference_on_dataset
    from instancefcn_d2.data import InstanceFCNDatasetMapper
    from instancefcn_d2.engine import launch_any_device
    from instancefcn_d2.evaluation import SegmentProposalEvaluator


    def main(args, out):
        cfg = train_net.setup(args)
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()  # ends with the evaluation on DATASETS.TEST, sharded over the ranks
        rank, name = comm.get_rank(), cfg.DATASETS.TEST[0]
        model = trainer.model
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        torch.save({k: v.detach().clone() for k, v in inner.state_dict().items()}, f"{out}/rank{rank}.pth")
        info = {"world_size": comm.get_world_size(), "ddp": isinstance(model, DistributedDataParallel),
                "shard_len": len(train_net.Trainer.build_test_loader(cfg, name))}
        if comm.is_main_process():
            info["ar_2proc"] = trainer._last_eval_results
            dicts = DatasetCatalog.get(name)
            loader = build_detection_test_loader(dicts, mapper=InstanceFCNDatasetMapper(cfg, False),
                                                 sampler=SequentialSampler(range(len(dicts))))
            info["num_images"] = len(dicts)
            info["ar_1proc"] = inference_on_dataset(
                inner, loader, SegmentProposalEvaluator(name, distributed=False))
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(info, f)
        comm.synchronize()


    if __name__ == "__main__":
        out = sys.argv[2]
        args = default_argument_parser().parse_args(sys.argv[3:])
        launch_any_device(main, args.num_gpus, num_machines=1, machine_rank=0,
                          dist_url=args.dist_url, args=(args, out))
''')


@pytest.mark.parametrize("config", [QUICKSTART, QUICKSTART_FPN], ids=["vgg16_pyramid", "vgg16_fpn"])
def test_two_gloo_processes_train_in_lockstep_and_evaluate_like_one(tmp_path, config):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    out.mkdir()
    opts = [
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.INSTANCEFCN.WINDOW_SIZE", "11",
        "MODEL.INSTANCEFCN.TEST_SCALES", "[64, 96]" if config == QUICKSTART else "[96]", "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "160",
        "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "100", "TEST.DETECTIONS_PER_IMAGE", "100",
        "DATASETS.TRAIN", "('synthetic_tiny_train',)", "DATASETS.TEST", "('synthetic_tiny_val',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_ITERS", "0",
        "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0", "SEED", "1",
        "OUTPUT_DIR", str(tmp_path / "train"),
    ]
    env = dict(os.environ, INSTANCEFCN_SYNTHETIC_ROOT=str(tmp_path / "synthetic"))
    run = subprocess.run(
        [sys.executable, str(driver), REPO, str(out), "--config-file", config,
         "--num-gpus", "2", "--dist-url", "auto", *opts],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "launching 2 CPU processes (gloo)" in log

    info = [json.load(open(out / f"rank{r}.json")) for r in range(2)]
    assert all(i["world_size"] == 2 and i["ddp"] for i in info)
    assert sorted(i["shard_len"] for i in info) == [1, 2]  # 3 val images split over the ranks

    p0, p1 = (torch.load(out / f"rank{r}.pth", weights_only=True) for r in range(2))
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k

    two, one = info[0]["ar_2proc"], info[0]["ar_1proc"]
    assert info[0]["num_images"] == 3
    # the trainer's results also carry the forward time per image ("inference"), which differs
    assert set(two) == {"segm_proposals", "box_proposals", "inference"}
    two.pop("inference")
    assert json.dumps(two, sort_keys=True) == json.dumps(one, sort_keys=True)  # NaN-safe equality
    assert two["box_proposals"]["AR@100"] > 0  # a non-trivial number to agree on
