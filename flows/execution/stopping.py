"""Ctrl-C during `refsr enhance`: the first one lets no new photo start, the second one exits at once.

The first SIGINT only sets a flag. Each photo task asks `begin_photo` before its model work, so a
photo that had not started never starts; the one in flight gets `GRACE_S` to finish and is then
given up (`give_up`): the run reports it as dropped and does not record it, even if it finishes
a moment later. The command then prints what was done, records it and exits 130. A second SIGINT
leaves at once: every output and record is written whole or not at all (temporary file and
rename; one transaction per record), so there is nothing half-written to clean up.

The state is per process because a signal is: photo tasks on threads of this process see it;
Dask worker processes do not (the run stops waiting for them instead).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

GRACE_S = 2.0  # what the photo in flight gets after the first Ctrl-C
EXIT_STOPPED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

_lock = threading.Lock()
_armed: list[bool] = []  # a run is recorded: from here a stop has something to report
_stop_at: list[float] = []  # monotonic time of the first Ctrl-C, once there was one
_in_flight: set[int] = set()  # photo ids past `begin_photo` and not yet ended
_given_up: set[int] = set()  # in flight when the grace ran out: never recorded by this run


def arm() -> None:
    """The run is recorded (called by the flow): a Ctrl-C from now on stops it and reports what it did.

    Before that (preflight, Prefect's server starting) there is nothing to report: Ctrl-C interrupts at once.
    """
    with _lock:
        _armed[:] = [True]


def requested() -> bool:
    """Whether a stop was asked for in this process."""
    return bool(_stop_at)


def request() -> None:
    """Ask for a stop (what the first Ctrl-C does): photos not begun stay unbegun."""
    with _lock:
        if not _stop_at:
            _stop_at.append(time.monotonic())


def grace_left() -> float:
    """Seconds the photo in flight still has; GRACE_S before any stop."""
    if not _stop_at:
        return GRACE_S
    return max(0.0, GRACE_S - (time.monotonic() - _stop_at[0]))


def begin_photo(photo_id: int) -> bool:
    """True when the photo may start its model work; False once a stop was requested."""
    with _lock:
        if _stop_at:
            return False
        _in_flight.add(photo_id)
        return True


def end_photo(photo_id: int) -> None:
    with _lock:
        _in_flight.discard(photo_id)


def may_record(photo_id: int) -> bool:
    """False for a photo the run gave up on: its result came too late to be reported, so it is not recorded."""
    with _lock:
        return photo_id not in _given_up


def give_up() -> frozenset[int]:
    """The photos still in flight, now dropped: from here on they may not record anything."""
    with _lock:
        _given_up.update(_in_flight)
        return frozenset(_in_flight)


def reset() -> None:
    """Forget a stop (tests, and embedded callers that run several commands in one process)."""
    with _lock:
        _armed.clear()
        _stop_at.clear()
        _in_flight.clear()
        _given_up.clear()


@contextlib.contextmanager
def first_ctrl_c_stops(say: Callable[[str], None]) -> Iterator[None]:
    """Within the block, Ctrl-C requests a stop (announced through `say`); a second one exits at once.

    Outside the main thread (an embedded caller) signals cannot be handled here: the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        if not _armed:
            raise KeyboardInterrupt
        if requested():
            say("refsr: second Ctrl-C: stopped at once; every output and record is whole or absent, "
                "and the next run picks up from here")
            os._exit(EXIT_STOPPED)
        request()
        say(f"refsr: stopping: no new photo starts; the one in progress gets {GRACE_S:g} s to finish, "
            "else it is dropped (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
