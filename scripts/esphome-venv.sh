#!/usr/bin/env bash
# ESPHome in its own virtualenv (.venv-esphome/): it pins paho-mqtt 1.6.1 and other
# packages exactly, which would break the agent's environment. The tests validate
# firmware_configs/ with .venv-esphome/bin/esphome (about 250 MB, 25 s to install).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
want="$(grep -E '^esphome==' firmware_configs/requirements.txt)"
if [ -x .venv-esphome/bin/esphome ]; then
  installed="$(.venv-esphome/bin/pip freeze 2>/dev/null || true)"
  if grep -qx "$want" <<<"$installed"; then exit 0; fi
fi
[ -x .venv-esphome/bin/python ] || "$PYTHON" -m venv .venv-esphome
.venv-esphome/bin/python -m pip install -q -r firmware_configs/requirements.txt
echo "ESPHome ready: .venv-esphome/bin/esphome ($want)"
