"""Named cross-process locks: PostgreSQL advisory locks, or a flock file beside a SQLite database.

``advisory_lock(engine, name)`` lets one process at a time into a block, for work that is not a
job (syncing an album's FAISS index, say). Guarantees, by backend:

* PostgreSQL: a session-level ``pg_advisory_lock`` on a dedicated autocommit connection, keyed
  by ``lock_key(name)`` (a stable signed 64-bit hash), so every process on every machine that
  uses the same database and name excludes every other. The lock lives as long as that
  connection: it is released on exit from the block, and by the server when the holder dies
  (its socket closes). If the connection itself breaks mid-block the server drops the lock
  while the block still runs; the exit logs a warning then. Work under the lock must therefore
  stay safe for readers (write to a temporary file and rename), which the FAISS sync already is.
  Advisory locks belong to a database, not a schema: names share one space per database.
* SQLite: ``flock`` on ``<database file>.locks/<key>.lock``. It excludes processes on one
  machine and is released by the kernel when the holder dies. SQLite cannot coordinate
  machines anyway (its file must not live on a network share), so nothing more is needed.

``timeout_s=None`` waits as long as it takes; a number polls until then and raises
``LockTimeout``; ``0`` tries once. Locks are not re-entrant: taking the same name twice in
one process waits on itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL, make_url

logger = logging.getLogger(__name__)

# A waiter notices a freed lock within this long; each poll is one cheap statement or syscall.
DEFAULT_POLL_S = 0.1

_U64 = 2**64 - 1  # the unsigned view of a key, for file names

# Keeps refsr's lock keys apart from other applications' advisory locks in a shared database.
_KEY_NAMESPACE = "refsr-album:"


class LockTimeout(TimeoutError):
    """The lock stayed held by someone else for the whole timeout."""


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL's bigint advisory-lock key space).

    blake2b rather than ``hash()``, whose value changes per process with hash randomisation.
    """
    _check_name(name)
    digest = hashlib.blake2b((_KEY_NAMESPACE + name).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL (absolute); None for other backends and in-memory databases."""
    url = make_url(url)
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" or "mode=memory" in database:
        return None
    if url.query.get("uri") in ("true", "1") or database.startswith("file:"):
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(database).resolve()


@contextlib.contextmanager
def advisory_lock(
    engine: Engine, name: str, *, timeout_s: float | None = None, poll_s: float = DEFAULT_POLL_S
) -> Iterator[None]:
    """Hold the lock called ``name`` in ``engine``'s database for the block (see the module doc)."""
    _check_name(name)
    _check_wait(timeout_s, poll_s)
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with _pg_advisory_lock(engine, name, timeout_s, poll_s):
            yield
    elif backend == "sqlite":
        db_file = sqlite_file(engine.url)
        if db_file is None:
            raise ValueError(
                f"advisory lock {name!r}: {engine.url.render_as_string()!r} is an in-memory SQLite "
                "database, which no other process can reach; use a database file"
            )
        path = db_file.with_name(db_file.name + ".locks") / f"{lock_key(name) & _U64:016x}.lock"
        with _file_lock(path, timeout_s, poll_s, f"advisory lock {name!r} ({path})"):
            yield
    else:
        raise ValueError(f"advisory locks need PostgreSQL or SQLite, not {backend!r}")


@contextlib.contextmanager
def file_lock(
    path: Path, *, timeout_s: float | None = None, poll_s: float = DEFAULT_POLL_S
) -> Iterator[None]:
    """Exclusive lock on ``path`` held for the block, across processes on one machine.

    flock (msvcrt on Windows): the kernel releases it when the holder dies. Being per open file,
    it also excludes two threads of one process that each call this.
    """
    _check_wait(timeout_s, poll_s)
    with _file_lock(path, timeout_s, poll_s, f"file lock {path}"):
        yield


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float | None, poll_s: float, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if timeout_s is None:
            _lock_file(handle, blocking=True)
        else:
            _poll(lambda: _lock_file(handle, blocking=False), timeout_s, poll_s, what)
        try:
            yield
        finally:
            _unlock_file(handle)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"lock name must be a non-empty string, got {name!r}")


def _check_wait(timeout_s: float | None, poll_s: float) -> None:
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s >= 0):
        raise ValueError(f"timeout_s must be None or a finite number >= 0, got {timeout_s!r}")
    if not (math.isfinite(poll_s) and poll_s > 0):
        raise ValueError(f"poll_s must be a finite number > 0, got {poll_s!r}")


def _poll(try_once: Callable[[], bool], timeout_s: float, poll_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not try_once():
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeout(f"{what} still held by another process after {timeout_s:g} s")
        time.sleep(min(poll_s, left))


@contextlib.contextmanager
def _pg_advisory_lock(
    engine: Engine, name: str, timeout_s: float | None, poll_s: float
) -> Iterator[None]:
    key = lock_key(name)
    # Autocommit: a session-level lock needs no transaction, and an idle open transaction held
    # for the whole block would pin old row versions and trip idle_in_transaction timeouts.
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        try:
            if timeout_s is None:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            else:
                what = f"advisory lock {name!r}"
                _poll(lambda: _pg_try_lock(connection, key), timeout_s, poll_s, what)
        except BaseException:
            # An interrupted wait may still be granted server-side; closing the session for good
            # (not back to the pool) makes sure the lock goes with it.
            connection.invalidate()
            raise
        try:
            yield
        finally:
            _pg_unlock(connection, name, key)
    finally:
        connection.close()


def _pg_try_lock(connection: Connection, key: int) -> bool:
    got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
    return bool(got)


def _pg_unlock(connection: Connection, name: str, key: int) -> None:
    try:
        held = connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key}).scalar()
    except Exception as exc:
        # The server drops a dead session's locks; never return a doubtful session to the pool.
        connection.invalidate()
        logger.warning("advisory lock %r: unlock failed (%s); connection discarded", name, exc)
        return
    if not held:
        logger.warning("advisory lock %r was lost during the block (connection reset)", name)


def _lock_file(handle: IO[bytes], *, blocking: bool) -> bool:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        while True:
            try:
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                # LK_LOCK gives up after about ten seconds; a blocking wait must not.
                time.sleep(DEFAULT_POLL_S)
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock_file(handle: IO[bytes]) -> None:
    if sys.platform == "win32":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


__all__ = ["DEFAULT_POLL_S", "LockTimeout", "advisory_lock", "file_lock", "lock_key", "sqlite_file"]
