#!/usr/bin/env bash
# Build what the edge_agent role installs, on the controller:
#   build/edge-agent-<version>-<arch>.tar  the agent's wheel and every dependency as
#                             wheels for the boxes' CPU and Python, in one file (a box
#                             needs no package index; one transfer per box)
#   build/models/<name>       the model file, checked against models/manifest.yaml
#
#   deploy/ansible/build-release.sh [--arch x86_64|aarch64] [--python 3.11] [--model PATH] [--out DIR]
#
# --arch defaults to this machine's; another arch downloads manylinux wheels for it
# from the package index (every dependency of the lean agent publishes them).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ARCH="$(uname -m)"
PY_VERSION="3.11"
MODEL=""
OUT="$HERE/build"
PYTHON="${PYTHON:-$(command -v python3)}"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --python) PY_VERSION="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

WHEELHOUSE="$OUT/wheelhouse/$ARCH"
mkdir -p "$WHEELHOUSE" "$OUT/models"
rm -f "$WHEELHOUSE"/*.whl

# The agent's own wheel, from this checkout.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELHOUSE" "$REPO"
WHEEL="$(ls "$WHEELHOUSE"/edge_agent-*.whl)"

# Its dependencies (the lean agent: no Ultralytics, no torch).
NATIVE_PY="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ "$ARCH" = "$(uname -m)" ] && [ "$PY_VERSION" = "$NATIVE_PY" ]; then
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELHOUSE" "$WHEEL"
else
  "$PYTHON" -m pip download --quiet --dest "$WHEELHOUSE" --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform "manylinux_2_28_$ARCH" --platform "manylinux_2_17_$ARCH" --platform "manylinux2014_$ARCH" \
    "$WHEEL"
fi

if [ -n "$MODEL" ]; then
  NAME="$(basename "$MODEL")"
  EXPECTED="$("$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["assets"][sys.argv[2]]["sha256"])' \
              "$REPO/models/manifest.yaml" "$NAME")"
  ACTUAL="$(sha256sum "$MODEL" | cut -d' ' -f1)"
  if [ "$ACTUAL" != "$EXPECTED" ]; then
    echo "error: $MODEL has sha256 $ACTUAL; models/manifest.yaml says $NAME is $EXPECTED" >&2
    exit 1
  fi
  cp "$MODEL" "$OUT/models/$NAME"
fi

VERSION="$(basename "$WHEEL" | cut -d- -f2)"
ARCHIVE="$OUT/edge-agent-$VERSION-$ARCH.tar"
tar -cf "$ARCHIVE" -C "$WHEELHOUSE" .
echo "release $VERSION for $ARCH: $(ls "$WHEELHOUSE" | wc -l) wheels, $(du -sh "$ARCHIVE" | cut -f1) in $ARCHIVE"
