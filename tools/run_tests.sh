#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec "${PYTHON:-python3}" -m pytest tests -q "$@"
