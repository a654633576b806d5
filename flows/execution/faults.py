"""Crash-test hook: with REFSR_FAULT_INJECT="<phase>:<n>", the n-th call at <phase> kills the process."""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger(__name__)

FAULT_ENV = "REFSR_FAULT_INJECT"  # tests only: "<phase>:<n>[:pause]"

_lock = threading.Lock()
_counts: dict[str, int] = {}  # calls per phase in this process: the point of the hook is "the n-th"


def fault_point(phase: str) -> None:
    """Die (or pause) here when the environment asks for it; return at once otherwise.

    os._exit skips every handler and finally block, like SIGKILL or a power cut would.
    "<phase>:<n>:pause" sleeps 5 s there instead ("pause:<seconds>" that long), like a long
    enhancement, for a test to signal into.
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    want, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    if want != phase:
        return
    with _lock:
        _counts[phase] = _counts.get(phase, 0) + 1
        hit = _counts[phase] == int(count or 1)
    action, _, seconds = action.partition(":")
    if hit and action == "pause":
        logger.error("fault injection: pausing at %s #%s in pid %d", phase, count or 1, os.getpid())
        time.sleep(float(seconds or 5))
    elif hit:
        logger.error("fault injection: exiting at %s #%s", phase, count)
        os._exit(137)
