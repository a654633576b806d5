"""Prefect's temporary local server dies with the refsr process that started it, even after kill -9.

Prefect starts it as a child (`python -m uvicorn ...`) and stops it from an exit handler, which a
SIGKILL never runs: the server lived on with its port and ~200 MB, one more per kill. On Linux the
child asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), set between
fork and exec through the one Popen call Prefect makes for it. The child also gets a process group
of its own, so that a Ctrl-C typed at the terminal reaches refsr and not the server.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from types import ModuleType
from typing import Any

_PR_SET_PDEATHSIG = 1
_installed = threading.Lock()
_done = False


def _deathsig_preexec(parent: int, prctl: Any) -> None:
    # Its own process group: a terminal's Ctrl-C goes to the foreground group, and the server
    # would shut down while the stopping run still reports to it. refsr alone decides
    # (flows/execution/stopping.py); the server still dies with it.
    os.setpgid(0, 0)
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


class _SubprocessWithDeathSignal(ModuleType):
    """`subprocess` as Prefect's server module sees it: Popen children die with this process."""

    def __init__(self, prctl: Any) -> None:
        super().__init__("subprocess")
        self._prctl = prctl

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:  # noqa: N802 - mirrors subprocess
        if kwargs.get("preexec_fn") is None:
            parent, prctl = os.getpid(), self._prctl
            kwargs["preexec_fn"] = lambda: _deathsig_preexec(parent, prctl)
        return subprocess.Popen(*args, **kwargs)


def die_with_this_process() -> bool:
    """Make Prefect's temporary server a child that dies with this process; False where that is not possible."""
    global _done
    with _installed:
        if _done:
            return True
        if not sys.platform.startswith("linux"):
            return False
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            from prefect.server.api import server as prefect_server
        except (OSError, AttributeError, ImportError):
            return False
        if not hasattr(prefect_server, "subprocess"):
            return False
        prefect_server.subprocess = _SubprocessWithDeathSignal(prctl)  # type: ignore[assignment]
        _done = True
        return True
