"""Who may do a job, and who may rewrite an album's vector index: database claims or this machine's file locks.

On PostgreSQL, which several machines share, a job is claimed in the database under a lease
(:mod:`db.claims`): any number of processes on any machines run it once, and the job of a holder
that died is taken over once its lease has run out. The index sync takes an advisory lock of the
same database. Nothing of this lives in a file, so machines need not share ``REFSR_HOME``.

SQLite can only be shared by the processes of one machine, so there a striped file lock in the
workspace keeps serialising them, as it always has. The flows take these only through
:func:`job_claim` and :func:`index_lock`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.claim_holder import HeldClaim, hold
from db.claims import new_owner
from db.locks import advisory_lock, file_lock
from flows.settings import Settings

logger = logging.getLogger(__name__)


class JobHold(Protocol):
    """The right to do one job, for as long as the block that got it runs."""

    def settle(self, session: Session) -> None:
        """Mark the job done inside `session`'s transaction, the one that records its result."""

    def check(self) -> None:
        """Raise ClaimLost when the job stopped being ours (another machine took it over); call before recording."""

    def give_up(self) -> None:
        """End the hold without settling it, e.g. once it was found lost."""


class _MachineHold:
    """A file lock held for the block: nothing to settle, and nobody can take it away while we live."""

    def settle(self, session: Session) -> None:
        return None

    def check(self) -> None:
        return None

    def give_up(self) -> None:
        return None


class _ClaimHold:
    """A database claim kept alive by its heartbeat."""

    def __init__(self, held: HeldClaim) -> None:
        self._held = held

    def settle(self, session: Session) -> None:
        # In the same transaction as the enhancement's rows: a claim lost meanwhile fails the
        # commit, so a job another machine took over is never recorded twice.
        self._held.complete(session)

    def check(self) -> None:
        self._held.check()

    def give_up(self) -> None:
        self._held.release()  # False, and nothing touched, when another owner holds it now


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError(f"expected a sessionmaker bound to an Engine, got {bind!r}")
    return bind


def shared_database(engine: Engine) -> bool:
    """Whether processes on other machines may use this database too (a server, not a SQLite file)."""
    return engine.url.get_backend_name() == "postgresql"


@contextlib.contextmanager
def job_claim(settings: Settings, sessions: sessionmaker[Session], key: str, *,
              wait: bool) -> Iterator[JobHold | None]:
    """The right to do job `key` for the block, or None when a live holder elsewhere has it and not `wait`.

    With ``wait`` the block starts once the other holder has finished (the job is then found done)
    or has died and its lease ran out (the job is ours). The block ending by an exception gives the
    job back at once, for a retry here or on another machine. On SQLite this process always waits.
    """
    engine = engine_of(sessions)
    if not shared_database(engine):
        # 256 stripes by the key's first byte: one file per job would leave a file per enhancement
        # forever, and two jobs that share a stripe only wait for each other.
        with file_lock(settings.locks_dir / "jobs" / f"{key[:2]}.lock"):
            yield _MachineHold()
        return
    # redo: the flows decide "done" themselves (a record whose output is intact), so a done claim
    # may be taken again (never a live one), and the check inside the claim keeps machines apart.
    with hold(sessions, key, new_owner(), lease_s=settings.claim_lease_s, wait_s=None if wait else 0.0,
              redo=True, max_attempts=settings.claim_attempts) as held:
        yield None if held is None else _ClaimHold(held)


def index_lock(engine: Engine, index_path: Path, album_id: int,
               embedder_key: str) -> contextlib.AbstractContextManager[None]:
    """Held across an index's read-modify-write, so that two processes never interleave their saves.

    On a shared database an advisory lock (released by the server if its holder dies): each machine
    keeps its own index file, so this only costs the others a short wait, and it still holds if the
    files ever move to a shared folder. On SQLite a lock file beside the index.
    """
    if shared_database(engine):
        return advisory_lock(engine, f"faiss-sync:{album_id}:{embedder_key}")
    return file_lock(index_path.with_name(index_path.name + ".lock"))
