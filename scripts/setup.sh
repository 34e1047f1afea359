#!/usr/bin/env bash
# Set up the agent on a fresh Debian / Ubuntu / Raspberry Pi OS machine.
#   scripts/setup.sh          system packages + .venv with the agent and Ultralytics
#   scripts/setup.sh --lean   the agent without Ultralytics/torch (ONNX/OpenVINO models only)
#   scripts/setup.sh --test   the agent plus what the test suite needs
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
EXTRAS="[ultralytics]"
case "${1:-}" in
  --test) WITH_TESTS=1; EXTRAS="[test]" ;;
  --lean) EXTRAS="" ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(python3 python3-venv python3-dev mosquitto)
if [ "$WITH_TESTS" = 1 ]; then
  # chromium: dashboard browser tests; the font renders Chinese in screenshots.
  APT_PACKAGES+=(chromium fonts-wqy-microhei)
  if [ -f scripts/test-apt-packages.txt ]; then
    mapfile -t EXTRA < <(grep -v '^\s*#' scripts/test-apt-packages.txt | grep -v '^\s*$')
    APT_PACKAGES+=("${EXTRA[@]}")
  fi
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${EXTRAS}"
if [ "$WITH_TESTS" = 1 ]; then bash scripts/esphome-venv.sh; fi  # firmware_configs/ validation

# Development and CI machines take the model and clips from ../shared (never
# downloaded there); a store box fetches them from the pinned URLs instead.
ASSETS_DIR="${EDGE_AGENT_ASSETS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent}"
SHARED="${EDGE_AGENT_SHARED_DIR:-../shared}"
if [ -d "$SHARED/models" ]; then
  mkdir -p "$ASSETS_DIR"
  for f in "$SHARED"/models/*.onnx "$SHARED"/data/*.mp4 "$SHARED"/data/eval/*/*.avi; do
    [ -e "$f" ] && ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$ASSETS_DIR/$(basename "$f")"
  done
fi
echo "setup done: .venv ready"
