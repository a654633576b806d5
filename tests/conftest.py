"""Session-wide test environment: offline, Prefect kept local and quiet, one Prefect harness per session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# Set before anything imports prefect or huggingface_hub: both read these at import time.
_PREFECT_HOME = tempfile.mkdtemp(prefix="refsr-tests-prefect-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Never let a developer's own workspace or model leak into a test.
for _name in ("REFSR_HOME", "REFSR_DATABASE_URL", "REFSR_MODEL", "REFSR_DEVICE", "REFSR_FAULT_INJECT"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for every flow test of the session (starting one costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
