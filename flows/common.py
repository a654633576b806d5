"""Helpers shared by the flows: transient-error policy, run bookkeeping, crash recovery, small caches."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import platform
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import Run, RunKind, RunStatus, utcnow
from durable.files import atomic_write
from flows.execution.identity import is_alive, process_identity
from flows.settings import Settings

logger = logging.getLogger(__name__)

# A run on another host cannot be checked by pid; after this long it is presumed dead.
FOREIGN_RUN_TIMEOUT = timedelta(hours=24)
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.EMFILE, errno.ENFILE})


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: a busy database, CUDA out of memory, a momentarily busy file system."""
    if isinstance(exc, OperationalError):
        text = str(exc).lower()
        return "locked" in text or "busy" in text or "could not connect" in text or "timeout" in text
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only transient failures; a bad photo fails at once."""
    try:
        state.result()
    except Exception as exc:  # the task's own exception is re-raised here
        return is_transient(exc)
    return False


def interrupted(exc: BaseException) -> bool:
    """Whether a run ended because it was stopped (Ctrl-C, SIGTERM) rather than because it failed."""
    from prefect.exceptions import TerminationSignal  # what Prefect's engine raises on SIGTERM

    return isinstance(exc, (KeyboardInterrupt, SystemExit, TerminationSignal))


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line, for records and tables."""
    text = " ".join(str(exc).split())
    # SQLAlchemy appends the statement and its parameters (a whole row) and a link: not one line's worth.
    text = text.split(" [SQL: ")[0].split(" (Background on this error")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("refsr-album", "torch", "prefect", "sqlalchemy", "faiss-cpu", "pillow"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def recover_crashed_runs(factory: sessionmaker[Session]) -> list[int]:
    """Mark runs left 'running' by a dead process as crashed; returns their ids.

    A run on this host is dead when its pid is gone (or reused by another process); a run on
    another host when it has been running for FOREIGN_RUN_TIMEOUT. A live concurrent run — the
    other `refsr enhance` in another terminal — is left alone.
    """
    crashed: list[int] = []
    cutoff = utcnow() - FOREIGN_RUN_TIMEOUT
    with factory.begin() as session:
        for summary in queries.run_history(session):
            if summary.status is not RunStatus.running:
                continue
            identity = (summary.parameters or {}).get("process")
            alive = is_alive(identity)
            if alive is None:
                alive = summary.started_at >= cutoff
            if alive:
                continue
            run = session.get(Run, summary.id)
            if run is None:
                continue
            # What it did is what it recorded; it ended after its last record, when exactly nobody saw.
            last = queries.last_record_at(session, run.id)
            queries.finish_run(
                session, run, RunStatus.crashed,
                counts=run.counts or {"enhanced": summary.succeeded, "failed": summary.failed},
                error=f"process {identity!r} stopped before the run finished (killed or crashed)",
                ended_at=max(last, run.started_at) if last is not None else run.started_at,
            )
            crashed.append(summary.id)
    if crashed:
        logger.warning("marked runs %s crashed: their processes are gone", crashed)
    return crashed


def start_run(
    factory: sessionmaker[Session], kind: RunKind, album_id: int, settings: Settings, extra: Mapping[str, Any]
) -> int:
    """Record a running run (committed at once so other processes see it); returns its id."""
    flow_run_id = None
    try:
        from prefect.runtime import flow_run

        flow_run_id = flow_run.get_id()
    except Exception:  # outside a flow run (task.fn() in tests)
        flow_run_id = None
    params = {**settings.to_record(), **extra, "process": process_identity()}
    with factory.begin() as session:
        run = queries.start_run(session, kind, album_id, params, versions(), flow_run_id=flow_run_id)
        return run.id


def finish_run(
    factory: sessionmaker[Session], run_id: int, status: RunStatus, counts: Mapping[str, Any], error: str | None = None
) -> None:
    with factory.begin() as session:
        run = session.get(Run, run_id)
        if run is not None:
            queries.finish_run(session, run, status, counts=dict(counts), error=error)


@dataclass(frozen=True)
class StartedRun:
    run_id: int
    album_id: int
    recovered: tuple[int, ...]  # earlier runs found dead at the start and marked crashed


@contextlib.contextmanager
def recorded_run(factory: sessionmaker[Session], kind: RunKind, album_root: Path, settings: Settings,
                 extra: Mapping[str, Any]) -> Iterator[StartedRun]:
    """A run's record around a flow's body: dead runs marked crashed, the album registered, ours started.

    The body finishes the run itself (with its counts); when it raises, the run is recorded as
    crashed (stopped: Ctrl-C, SIGTERM) or failed, and the exception goes on.
    """
    recovered = recover_crashed_runs(factory)
    with factory.begin() as session:
        album_id = queries.get_or_create_album(session, str(album_root)).id
    run_id = start_run(factory, kind, album_id, settings, extra)
    try:
        yield StartedRun(run_id, album_id, tuple(recovered))
    except BaseException as exc:
        status = RunStatus.crashed if interrupted(exc) else RunStatus.failed
        finish_run(factory, run_id, status, {}, error=one_line(exc))
        raise


class JsonCache:
    """A directory of small JSON values by hex key, written atomically; a memo, never the truth."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: Any) -> None:
        """Remember `value`; a memo that cannot be written (a worker on a machine without this folder) is skipped."""
        text = json.dumps(value, sort_keys=True)
        try:
            atomic_write(self._path(key), lambda tmp: tmp.write_text(text, encoding="utf-8"))
        except OSError as exc:
            logger.info("memo %s not written: %s", self._path(key), one_line(exc))
