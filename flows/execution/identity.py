"""Who runs a run: host, pid and process start time, so that a later run can tell a dead run from a live one."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so split after its closing parenthesis.
    return int(stat.rpartition(")")[2].split()[19])


def process_identity() -> dict[str, object]:
    """This process, as a run records it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": _start_ticks(os.getpid())}


def is_alive(identity: dict[str, object] | None) -> bool | None:
    """True/False for a process on this host; None when it ran elsewhere (or we cannot tell)."""
    if not identity or identity.get("host") != socket.gethostname():
        return None
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    ticks = identity.get("start_ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)
