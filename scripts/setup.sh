#!/usr/bin/env bash
# Creates .venv and installs refsr-album with everything its tests need, on a fresh machine.
#
# REFSR_TORCH chooses the torch build (README, "Install"):
#   unset   the default: torch 2.14.1 from PyPI or the local wheel cache; on Linux that is the CUDA build
#           (NVIDIA libraries included, whether or not the machine has a GPU)
#   cpu     the CPU-only build from PyTorch's CPU wheel index ($REFSR_TORCH_INDEX, default
#           https://download.pytorch.org/whl/cpu); stops with a message when that index is unreachable
#   FILES   wheel files you name, space-separated: a torch 2.9-2.14.1 (e.g. a +cpu build) and its
#           torchvision. Name both: PyPI's torchvision is built against PyPI's CUDA torch and does not
#           load with a CPU-only one ("operator torchvision::nms does not exist"); setup checks this.
# An existing .venv keeps the torch it has: remove .venv first to change builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VISION_RANGE="torchvision>=0.24,<=0.29.1"
CHOICE=${REFSR_TORCH:-}
INDEX=${REFSR_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
if [ -n "$CHOICE" ] && [ "$CHOICE" != cpu ]; then
  for wheel in $CHOICE; do
    if [ ! -f "$wheel" ]; then
      echo "setup: REFSR_TORCH must be empty, 'cpu' or wheel files; no such file: $wheel" >&2
      exit 2
    fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  case "$CHOICE" in
    "")
      echo "setup: installing torch and torchvision (the default build: about 6 GB with its NVIDIA libraries;" \
           "REFSR_TORCH=cpu for the CPU-only one)"
      .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
      ;;
    cpu)
      echo "setup: installing the CPU-only torch and torchvision from $INDEX"
      # Only that index: PyPI's torch of the same version is the CUDA build.
      if ! .venv/bin/python -m pip install -q --index-url "$INDEX" "torch==2.14.1" "torchvision==0.29.1"; then
        echo "setup: the CPU-only build is not reachable at $INDEX; set REFSR_TORCH_INDEX to a mirror," \
             "REFSR_TORCH to a torch wheel file, or leave REFSR_TORCH unset for the default build" >&2
        exit 1
      fi
      ;;
    *)
      echo "setup: installing $CHOICE"
      # shellcheck disable=SC2086  # several files, split on spaces on purpose
      .venv/bin/python -m pip install -q $CHOICE "$VISION_RANGE"
      ;;
  esac
  if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "setup: torch and torchvision were installed but do not load together; name a torchvision wheel" \
         "built for this torch in REFSR_TORCH, or remove .venv and leave REFSR_TORCH unset" >&2
    exit 1
  fi
fi
echo "setup: installing refsr-album and its dependencies"
.venv/bin/python -m pip install -q -e ".[dev,postgres,dask]"
.venv/bin/python -c "import torch; print('setup: torch', torch.__version__,
  'with CUDA ' + torch.version.cuda if torch.version.cuda else '(CPU only)')"
echo "setup: done (.venv/bin/refsr is ready)"
