#!/usr/bin/env bash
# The README's main command: set up (idempotent), then train on generated data, evaluate
# proposal AR and draw pictures (tools/quickstart.py; extra arguments are passed on, e.g.
# --model vgg16_pyramid, --with-k1-ablation, or KEY VALUE config overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash tools/setup.sh
# quickstart.json records the set-up's seconds beside the stages it times itself.
QUICKSTART_SETUP_S=$(( $(date +%s) - start )) "${PYTHON:-python3}" tools/quickstart.py "$@"
echo "[quickstart] total wall clock, set-up included: $(( $(date +%s) - start )) s"
