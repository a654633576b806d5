"""The workspace and its databases failing (issue 25): one line naming the place and the fix, the right exit code."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from tests.flows.test_cli import _enhance_args, _env, _refsr

pytestmark = pytest.mark.slow

# Loaded at start-up from PYTHONPATH: the file system under FULL_DIR reports 1 MB free, as a full disk does.
_FULL_DISK = """
import os, shutil
from collections import namedtuple
_real = shutil.disk_usage
def _usage(path):
    usage = _real(path)
    if os.path.realpath(path).startswith(os.environ["FULL_DIR"]):
        return type(usage)(usage.total, usage.total - 2**20, 2**20)
    return usage
shutil.disk_usage = _usage
"""


@pytest.mark.parametrize("command", ["enhance", "index"])
def test_a_full_workspace_is_one_line_and_exit_2_before_any_work(command: str, make_album, tiny_model: Path,
                                                                 tmp_path: Path) -> None:
    album = make_album(1)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_FULL_DISK)
    home = tmp_path / "h"
    home.mkdir()
    env = _env(tmp_path, PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
               FULL_DIR=str(home.resolve()), PREFECT_HOME=str(home / "prefect"))
    args = _enhance_args(album, home, tiny_model) if command == "enhance" else [
        "index", str(album), "--home", str(home), "--no-progress"]
    started, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = _refsr(args, env, tmp_path / "run")
    took = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "not enough space in the workspace" in done.stderr and str(home.resolve()) in done.stderr
    # Under 5 s of work (3.6 s wall on an idle-enough 2-core box); wall time on a shared test machine
    # only has to show that nothing waits (a full workspace used to hang 300 s starting Prefect).
    assert cpu_s < 5 and took < 60, (cpu_s, took)
    assert not (album / "enhanced").exists() and not list(home.iterdir())  # nothing written, Prefect never started
