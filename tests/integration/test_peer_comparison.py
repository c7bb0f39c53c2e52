"""``tools/peer_comparison.py --smoke``: InstanceFCN, class-agnostic Mask R-CNN and RPN alone
trained (a sweep, then the "full" budget) and scored in one run on tiny data; the record and its
rendering. Figures are not checked (a few iterations learn nothing); what each side reports is."""
import json
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

AR_KEYS = ["AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]


def test_class_agnostic_mapper_maps_every_category_to_zero(synthetic_root, project_cfg):
    from detectron2.data import DatasetCatalog, DatasetMapper

    from instancefcn_d2.data import register_project_datasets
    from tools.peers.training import ClassAgnosticDatasetMapper

    cfg = project_cfg("configs/peers/MaskRCNN-VGG16-FPN-synthetic.yaml", ["DATASETS.TRAIN", "('synthetic_tiny_train',)"])
    register_project_datasets(names=["synthetic_tiny_train"])
    dicts = DatasetCatalog.get("synthetic_tiny_train")
    plain = [DatasetMapper(cfg, True)(dict(d))["instances"].gt_classes for d in dicts]
    assert len(torch.cat(plain).unique()) > 1  # the data has several categories
    for d, p in zip(dicts, plain):
        agnostic = ClassAgnosticDatasetMapper(cfg, True)(dict(d))["instances"]
        assert agnostic.gt_classes.tolist() == [0] * len(p)
        assert agnostic.gt_masks.polygons  # masks kept: Mask R-CNN's targets


def test_class_agnostic_mapper_reads_rle_masks(project_cfg, tmp_path):
    import cv2
    import numpy as np
    from detectron2.structures import BitMasks, BoxMode
    from pycocotools import mask as mask_util

    from tools.peers.training import ClassAgnosticDatasetMapper

    mask = np.zeros((40, 48), np.uint8)
    mask[5:20, 8:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.full((40, 48, 3), 128, np.uint8))
    record = {"file_name": str(path), "height": 40, "width": 48, "image_id": 1, "annotations": [
        {"bbox": [8, 5, 22, 15], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 3, "iscrowd": 0, "segmentation": rle}]}
    cfg = project_cfg("configs/peers/MaskRCNN-VGG16-FPN-synthetic.yaml",
                      ["INPUT.MIN_SIZE_TRAIN", "(40,)", "INPUT.MAX_SIZE_TRAIN", "48", "INPUT.RANDOM_FLIP", "none"])
    out = ClassAgnosticDatasetMapper(cfg, True)(record)["instances"]
    assert isinstance(out.gt_masks, BitMasks) and out.gt_classes.tolist() == [0]
    assert out.gt_masks.tensor[0].numpy().astype(np.uint8).tolist() == mask.tolist()


def test_peer_comparison_smoke(synthetic_root, tmp_path):
    from tools.peers import cli
    from tools.render_results import peers_blocks, render_blocks

    out = tmp_path / "peers.json"
    record = cli.main(["--smoke", "--datasets", "synthetic_tiny_train:synthetic_tiny_val", "--iters", "2",
                       "--sweep-iters", "1", "--lrs", "instancefcn=0.015", "mask_rcnn=0.005", "rpn=0.005,0.01",
                       "--out", str(out), "--output-root", str(tmp_path / "output")])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["complete"] and record["budget"] == {"iters": 2, "ims_per_batch": 1, "images_seen": 2}
    assert record["machine"]["git_commit"]
    (run,) = record["runs"]
    assert (run["train"], run["test"]) == ("synthetic_tiny_train", "synthetic_tiny_val")
    # the sweep chose on the last of the 6 training images (the default 20 %), not on the test set
    assert run["sweep_split"] == {"train": "synthetic_tiny_train__sweep_fit", "images": 5,
                                  "held_out": "synthetic_tiny_train__sweep_holdout", "held_out_images": 1}
    assert "held out" in record["sweep"]["rule"]
    sides = run["sides"]
    assert list(sides) == ["instancefcn", "mask_rcnn", "rpn"]
    for name, side in sides.items():
        assert side["train_s"] > 0 and side["infer_s_per_image"] > 0
        assert list(side["box"]) == AR_KEYS
        # the chosen lr is the sweep's best AR@100 (first on a tie)
        best = max(side["sweep"], key=lambda s: s["AR@100"])
        assert side["lr"] == best["lr"] and side["lr_chosen_by_sweep"]
    assert [s["lr"] for s in sides["rpn"]["sweep"]] == [0.005, 0.01]
    assert list(sides["instancefcn"]["mask"]) == AR_KEYS and list(sides["mask_rcnn"]["mask"]) == AR_KEYS
    assert sides["rpn"]["mask"] is None  # boxes only
    # InstanceFCN again for as many iterations as Mask R-CNN's training seconds allow
    eq = run["equal_time"]
    assert eq["iters"] == max(1, round(2 * sides["mask_rcnn"]["train_s"] / sides["instancefcn"]["train_s"]))
    assert eq["lr"] == sides["instancefcn"]["lr"] and list(eq["mask"]) == AR_KEYS and eq["train_s"] > 0

    blocks = peers_blocks(record)
    assert blocks["peers"].count("\n| RPN alone |") == 3  # one result row, two sweep rows
    assert "trained on 5 images of `synthetic_tiny_train` and scored on the other 1)" in blocks["peers"]
    assert f"\n| InstanceFCN at Mask R-CNN (class-agnostic)'s training time ({eq['iters']} iterations) |" in blocks["peers"]
    assert f"At Mask R-CNN (class-agnostic)'s training time ({eq['iters']} iterations" in blocks["peers_summary"]
    assert "against Mask R-CNN" in blocks["peers_summary"] and "against RPN alone" in blocks["peers_summary"]
    # a results/peers_<data>.json renders as its own pair of blocks, beside the quick start's
    results = tmp_path / "results"
    results.mkdir()
    (results / "peers_tiny.json").write_text(out.read_text())
    rendered = render_blocks(str(results))
    assert rendered["peers_tiny"] == blocks["peers"] and rendered["peers_tiny_summary"] == blocks["peers_summary"]
    assert "peers" not in rendered


def test_bad_arguments_fail_before_any_work():
    from tools.peers import cli

    with pytest.raises(SystemExit, match="TRAIN:TEST"):
        cli.main(["--datasets", "synthetic_train"])
    with pytest.raises(SystemExit, match="SIDE=LR"):
        cli.main(["--lrs", "maskrcnn=0.01"])


def test_datasets_are_checked_before_any_work(tmp_path):
    from tools.peers import cli

    out = tmp_path / "peers.json"
    with pytest.raises(SystemExit, match="not found"):
        cli.main(["--dataset", f"mine_train={tmp_path}/missing.json:{tmp_path}", "--out", str(out)])
    with pytest.raises(SystemExit, match=r"\['nope_val'\].*--dataset NAME="):
        cli.main(["--datasets", "synthetic_train:nope_val", "--out", str(out)])
    assert not out.exists()
