#!/usr/bin/env bash
# GPU readiness in one run (< 10 minutes): the CUDA-marked tests, fp16/bf16 autocast and fused-backend
# equivalence, faiss-gpu against faiss-cpu, and the timing table, all written to one results file.
#
#   bash benchmarks/gpu_check.sh                     # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run           # every step on the CPU at tiny sizes (CI, no GPU)
#   bash benchmarks/gpu_check.sh --out results.md    # results file (default: gpu_check_results.md)
#
# Exit status: 0 all passed, 1 a check or test failed, 2 usage error or no GPU without --dry-run.
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
out=gpu_check_results.md
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) [ $# -ge 2 ] || { echo "gpu_check: --out needs a file" >&2; exit 2; }; out=$2; shift ;;
        *) echo "gpu_check: unknown argument $1 (use --dry-run, --out FILE)" >&2; exit 2 ;;
    esac
    shift
done

py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120

if [ "$dry_run" = 0 ] && ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch (use --dry-run on a CPU)" >&2
    exit 2
fi

status=0
{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')$([ "$dry_run" = 1 ] && echo ', DRY RUN on the CPU')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    echo '```'
    echo
    echo "## CUDA-marked tests (pytest -m gpu)"
    echo
    echo '```'
    if [ "$dry_run" = 1 ]; then
        # Selecting them is what can be checked without a GPU: they skip themselves there.
        timeout 240 "$py" -m pytest -q -m gpu --collect-only -p no:cacheprovider tests/ttsr_core tests/pipeline
    else
        timeout 240 "$py" -m pytest -q -m gpu -p no:cacheprovider tests
    fi
    echo "exit status $?"
    echo '```'
    echo
    timeout 330 "$py" benchmarks/gpu_check.py $([ "$dry_run" = 1 ] && echo --dry-run)
    echo "checks exit status $?"
} > "$out" 2>&1

grep -q '^exit status [^05]' "$out" && status=1   # pytest: 0 passed, 5 nothing selected
grep -q '^checks exit status 0$' "$out" || status=1
echo "gpu_check: results in $out ($([ $status = 0 ] && echo PASS || echo FAIL))"
exit $status
