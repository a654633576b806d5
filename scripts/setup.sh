#!/usr/bin/env bash
# Creates .venv and installs refsr-album with everything its tests need, on a fresh machine.
# torch is pinned to the build that lies on this project's machines (pip takes it from local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "setup: installing torch and torchvision (a few GB, from the local wheel cache where present)"
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
echo "setup: installing refsr-album and its dependencies"
.venv/bin/python -m pip install -q -e ".[dev,postgres,dask]"
echo "setup: done (.venv/bin/refsr is ready)"
