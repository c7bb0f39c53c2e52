"""The quick start, shortened (4 iterations on tiny generated images), end to end:
train -> evaluate -> pictures, as `bash tools/quickstart.sh` runs it."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_smoke(tmp_path):
    out = tmp_path / "qs"
    env = dict(os.environ, INSTANCEFCN_SYNTHETIC_ROOT=str(tmp_path / "data"))
    proc = subprocess.run(
        [sys.executable, "tools/quickstart.py", "--smoke", "--pictures", "2", "--output-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Training ran and logged progress with an ETA; TensorBoard events were written.
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 0" in log and "eta:" in log
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))
    assert (out / "model_final.pth").is_file()

    # Evaluation: finite AR numbers in percent, and both export files.
    ar = json.loads((out / "proposal_ar.json").read_text())
    for task in ("segm_proposals", "box_proposals"):
        for key in ("AR@10", "AR@100", "AR@1000"):
            assert np.isfinite(ar[task][key]) and 0.0 <= ar[task][key] <= 100.0
    inference = out / "inference" / "synthetic_tiny_val"
    assert (inference / "segment_proposals_coco.json").is_file()
    assert (inference / "box_proposals.pkl").is_file()

    # Pictures of val images, at the images' own size.
    pictures = sorted((out / "pictures").iterdir())
    assert len(pictures) == 2
    for p in pictures:
        src = tmp_path / "data_tiny" / "val" / p.name
        assert cv2.imread(str(p)).shape == cv2.imread(str(src)).shape
    assert "Class-agnostic mask AR" in proc.stdout
