"""The quick start, shortened (4 iterations on tiny generated images), end to end with the k = 1
ablation and a variant: train -> evaluate (train_net.py --eval-only) -> pictures -> the results
file, as `bash tools/quickstart.sh --with-k1-ablation` runs it."""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instancefcn_d2.data.datasets import preset_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METRICS = ["AR@10", "AR@100", "AR@1000", "ARs@1000", "ARm@1000", "ARl@1000"]


def rescore(gt_json, results_json):
    """Independent reference: plain pycocotools on the written proposals; -1 (no gt) -> None."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        E = COCOeval(gt, gt.loadRes(results_json), "segm")
        E.params.useCats = 0
        E.params.catIds = sorted(set(gt.getCatIds()) | {1})  # proposals are category 1
        E.params.maxDets = [10, 100, 1000]
        E.evaluate()
        E.accumulate()
        E.summarize()
    return [None if v == -1 else v * 100 for v in E.stats[6:12]]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, module_synthetic_root, load_tool):
    """``tools/quickstart.py`` in this process (its stages are commands: train_net.py twice and
    tools/demo.py for each model); returns the folder and what it printed."""
    tmp = tmp_path_factory.mktemp("qs")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # for the stages' processes
        with contextlib.redirect_stdout(out):
            load_tool("quickstart").main(
                ["--smoke", "--pictures", "2", "--output-dir", str(tmp / "qs"), "--with-k1-ablation",
                 "--variants", "vgg16_fpn", "--results-dir", str(tmp / "results")])
    return tmp, out.getvalue()


def test_training_evaluation_and_pictures(quickstart, module_synthetic_root):
    tmp, stdout = quickstart
    data = Path(preset_root("synthetic_tiny"))  # under module_synthetic_root
    out = tmp / "qs"
    # Training ran and logged progress with an ETA; TensorBoard events were written.
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 0" in log and "eta:" in log
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))
    assert (out / "model_final.pth").is_file()

    # Evaluation (--eval-only on model_final.pth): the AR written equals plain pycocotools on
    # the written proposals; an area range without ground truth is null, not NaN.
    ar = json.loads((out / "proposal_ar.json").read_text())
    inference = out / "inference" / "synthetic_tiny_val"
    expected = rescore(str(data / "val.json"), str(inference / "segment_proposals_coco.json"))
    for m, e in zip(METRICS, expected):
        assert ar["segm_proposals"][m] == (None if e is None else pytest.approx(e, abs=1e-9)), m
    assert (inference / "box_proposals.pkl").is_file()
    assert ar["inference"]["images"] == 3 and ar["inference"]["s_per_image"] > 0

    # Pictures of val images, small ones enlarged to a 512-px shorter side (readable labels).
    pictures = sorted((out / "pictures").iterdir())
    assert len(pictures) == 2
    for p in pictures:
        src = data / "val" / p.name
        (h, w, c), (sh, sw, sc) = cv2.imread(str(p)).shape, cv2.imread(str(src)).shape
        assert c == sc and min(h, w) == max(512, min(sh, sw)) and abs(h / w - sh / sw) < 0.01
    assert "Class-agnostic mask AR" in stdout


def test_results_file_is_the_whole_record_of_the_run(quickstart):
    tmp, _ = quickstart
    record = json.loads((tmp / "results" / "quickstart.json").read_text())
    assert set(record) == {"command", "dataset", "machine", "model", "runs", "variants", "wall_clock_s"}
    assert record["model"] == "vgg16_fpn"  # the main run's model
    assert record["dataset"] == "synthetic_tiny_val"
    for key, out in (("k5", tmp / "qs"), ("k1", tmp / "qs_k1")):
        run = record["runs"][key]
        # The AR in the record is the AR that run's evaluation wrote (not typed in).
        ar = json.loads((out / "proposal_ar.json").read_text())
        assert run["mask"] == ar["segm_proposals"] and run["box"] == ar["box_proposals"]
        assert run["infer_s_per_image"] == ar["inference"]["s_per_image"]
        assert set(run["stages_s"]) == {"train", "eval", "pictures"}
        assert all(v > 0 for v in run["stages_s"].values())
    assert record["wall_clock_s"] >= sum(sum(r["stages_s"].values()) for r in record["runs"].values())
    assert "MODEL.INSTANCEFCN.K 1" not in json.dumps(record["runs"]["k5"])
    # vgg16_fpn is the main run's model: its entry is that run's figures, not a new training.
    k5 = record["runs"]["k5"]
    assert record["variants"] == {"vgg16_fpn": {
        "config": "configs/quickstart/InstanceFCN-VGG16-FPN-synthetic.yaml",
        **{m: k5["mask"][m] for m in ("AR@10", "AR@100", "AR@1000")},
        "train_s": k5["stages_s"]["train"], "stages_s": k5["stages_s"], "infer_s_per_image": k5["infer_s_per_image"]}}
    assert not (tmp / "qs_variants").exists()

    m = record["machine"]
    assert m["logical_cores"] == os.cpu_count() and m["cpu_model"]
    assert len(m["load_average_at_start"]) == 3
    assert isinstance(m["idle"], bool)  # the rule: tests/unit/test_machine.py
    assert m["gemm_peak_gflops_per_s"] > 0
    assert m["torch_version"] and m["detectron2_version"]
    assert m["git_commit"] is None or len(m["git_commit"].split("-")[0]) == 40

    # RESULTS.md's tables render from this record (tools/render_results.py reads this format).
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import render_results

    blocks = render_results.quickstart_blocks(record)
    one = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    assert f"| masks (k = 5) | {' | '.join(one(k5['mask'][k]) for k in METRICS)} |" in blocks["quickstart"]
    assert f"| k = 1 (plain FCN) | {one(record['runs']['k1']['mask']['AR@10'])} |" in blocks["quickstart_k1"]
    assert "`vgg16_fpn`" in blocks["quickstart_variants"]

    picture = cv2.imread(str(tmp / "results" / "k1_vs_k5.png"))
    assert picture is not None and picture.shape[1] > 2 * 96


def test_unknown_variant_is_refused():
    proc = subprocess.run([sys.executable, "tools/quickstart.py", "--variants", "vgg16_fpn,resnet9000"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "resnet9000" in proc.stderr
