"""Cross-process locks on the workspace's files: one per job (striped) and one per vector index.

The flows take a lock only through :func:`job_lock` and :func:`index_lock`, so either can become a
database claim (several machines share a database, not a file system) without touching a task.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from db.locks import file_lock
from flows.settings import Settings


def job_lock(settings: Settings, key: str) -> contextlib.AbstractContextManager[None]:
    """One process per job at a time: a concurrent `refsr enhance` waits here, then finds the job done.

    256 lock files striped by the key's first byte: one per job would leave an empty file per
    enhancement forever, and two jobs that share a stripe only wait for each other.
    """
    return file_lock(settings.locks_dir / "jobs" / f"{key[:2]}.lock")


def index_lock(index_path: Path) -> contextlib.AbstractContextManager[None]:
    """Held across an index's read-modify-write, so that two processes never interleave their saves."""
    return file_lock(index_path.with_name(index_path.name + ".lock"))
