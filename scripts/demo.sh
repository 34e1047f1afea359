#!/usr/bin/env bash
# Set up, then run the agent on the built-in demo (sample clip, local SQLite,
# dashboard on http://127.0.0.1:8080/). Extra arguments go to `edge-agent demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0
exec .venv/bin/edge-agent demo "$@"
