#!/usr/bin/env bash
# Runs the test suite offline, with Prefect and Hugging Face kept local.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
exec .venv/bin/python -m pytest -q "$@"
