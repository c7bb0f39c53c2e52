"""The recall view (instancefcn_d2.visualize, tools/demo.py --dataset) and
tools/ranking_experiment.py, whose rows must equal a model built with the row's keys and scored
the usual way (inference_on_dataset + SegmentProposalEvaluator)."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

import instancefcn_d2  # noqa: F401  (must precede detectron2 imports)
from detectron2.structures import Boxes, Instances

from instancefcn_d2.visualize import best_proposal_per_object, draw_best_per_object

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml"
TINY = ["DATASETS.TEST", "('synthetic_tiny_val',)", "MODEL.INSTANCEFCN.TEST_SCALES", "[96]",
        "MODEL.INSTANCEFCN.TEST_MAX_SIZE", "128", "MODEL.INSTANCEFCN.TOPK_PER_SCALE", "40",
        "DATALOADER.NUM_WORKERS", "0"]


def _instances(masks, scores):
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    inst = Instances(tuple(masks.shape[1:]))
    inst.pred_masks, inst.scores = masks, torch.as_tensor(scores, dtype=torch.float64)
    inst.pred_boxes = Boxes(torch.zeros(len(masks), 4))
    return inst


def test_best_proposal_per_object_and_its_picture():
    h, w = 120, 160
    props = np.zeros((4, h, w), bool)
    props[0, 10:60, 10:60] = True  # rank 1: object A, loosely
    props[1, 10:50, 10:50] = True  # rank 2: object A, exactly
    props[2, 70:110, 100:150] = True  # rank 3: half of object B
    props[3, 0:5, 0:5] = True
    gt = np.zeros((3, h, w), bool)
    gt[0, 10:50, 10:50] = True
    gt[1, 70:110, 100:150] = True
    gt[1, 70:110, 60:100] = True  # B: twice proposal 3's width
    gt[2, 100:118, 5:30] = True  # C: no proposal touches it
    index, iou = best_proposal_per_object(_instances(props, [0.9, 0.8, 0.7, 0.1]), gt)
    ref_iou = [[(p & g).sum() / (p | g).sum() for g in gt] for p in props]
    assert index.tolist() == [1, 2, -1]
    np.testing.assert_allclose(iou, [ref_iou[1][0], ref_iou[2][1], 0.0])

    image = np.full((h, w, 3), 200, np.uint8)
    out = draw_best_per_object(image, _instances(props, [0.9, 0.8, 0.7, 0.1]), gt, min_side=0)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    red = (out[..., 0] > 180) & (out[..., 1] < 80) & (out[..., 2] < 80)
    assert red[95:120, 0:35].any()  # the missed object's outline
    assert not np.array_equal(out[20:40, 20:40], image[20:40, 20:40])  # A's best proposal drawn
    assert np.array_equal(out[1:4, 100:110], image[1:4, 100:110][:, :, ::-1])  # nothing drawn there


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, module_synthetic_root):
    """Random-init quick-start weights, saved as a checkpoint."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from instancefcn_d2.config import get_project_cfg

    torch.manual_seed(0)
    cfg = get_project_cfg(os.path.join(REPO, CONFIG), TINY + ["MODEL.WEIGHTS", ""])
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(model, save_dir=str(path)).save("model")
    return str(path / "model.pth")


def test_ranking_experiment_rows_equal_the_model_with_those_keys(load_tool, tiny_checkpoint, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.evaluation import inference_on_dataset
    from detectron2.modeling import build_model

    from instancefcn_d2.config import get_project_cfg
    from instancefcn_d2.engine.trainer import Trainer

    tool = load_tool("ranking_experiment")
    results = tmp_path / "ranking.json"
    names = ["box 0.8", "mask 0.5 + maskness", "matrix gaussian + maskness"]
    record = tool.main(["--weights", tiny_checkpoint, "--results", str(results), "--variants", ",".join(names),
                        *TINY])
    assert json.loads(results.read_text()) == json.loads(json.dumps(record))
    assert [v["name"] for v in record["variants"]] == names and record["images"] == 3
    for v in record["variants"][1:]:
        keys = [x for k, val in v["keys"].items() for x in (f"MODEL.INSTANCEFCN.{k}", str(val))]
        cfg = get_project_cfg(os.path.join(REPO, CONFIG), TINY + keys + ["MODEL.WEIGHTS", tiny_checkpoint])
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(tiny_checkpoint)
        evaluator = Trainer.build_evaluator(cfg, "synthetic_tiny_val", str(tmp_path / "eval"))
        ref = inference_on_dataset(model, Trainer.build_test_loader(cfg, "synthetic_tiny_val"), evaluator)
        assert v["mask"] == {k: ref["segm_proposals"][k] for k in v["mask"]}
        assert v["box"] == {k: ref["box_proposals"][k] for k in v["box"]}
        assert 0 < v["nms_s_per_image"] < v["render_s_per_image"] < v["s_per_image"]


def test_demo_draws_the_recall_view_beside_the_top_n(load_tool, tiny_checkpoint, tmp_path):
    from detectron2.data import DatasetCatalog

    demo = load_tool("demo")
    from instancefcn_d2.data import register_project_datasets

    register_project_datasets(names=["synthetic_tiny_val"])
    image = DatasetCatalog.get("synthetic_tiny_val")[0]["file_name"]
    opts = ["--opts", *TINY, "MODEL.WEIGHTS", tiny_checkpoint]
    assert demo.main(["--config-file", os.path.join(REPO, CONFIG), "--input", image, "--output",
                      str(tmp_path / "plain"), "--top-n", "5", *opts]) == 0
    assert demo.main(["--config-file", os.path.join(REPO, CONFIG), "--input", image, "--output",
                      str(tmp_path / "recall"), "--top-n", "5", "--dataset", "synthetic_tiny_val", *opts]) == 0
    name = os.path.splitext(os.path.basename(image))[0] + ".png"
    plain, recall = (cv2.imread(str(tmp_path / d / name)) for d in ("plain", "recall"))
    assert recall.shape[1] > 2 * plain.shape[1] - 1 and recall.shape[0] > plain.shape[0]  # two panels + titles
