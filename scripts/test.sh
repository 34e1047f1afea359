#!/usr/bin/env bash
# Set up (with test dependencies), then run the whole test suite. CI runs this.
# Extra arguments go to pytest, e.g. scripts/test.sh -k counting
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$(mktemp -d)}"
exec .venv/bin/python -m pytest "$@"
