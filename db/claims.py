"""Job claims under leases: processes on any machines sharing one database run each job once.

A job is named by its job key (64 lowercase hex). ``claim`` makes the caller its owner until
``expires_at``; the owner keeps it with ``renew`` (a heartbeat), and settles it with
``complete`` (done: nobody claims it again unless they ask to redo it) or ``release`` (given
back unfinished: anyone may claim it at once). ``db.claim_holder.hold`` does all of that around a
block, with a heartbeat thread renewing every ``lease_s / 3``.

Guarantees
----------
* At most one live claim per key: ``claim`` succeeds only when the key is new, released,
  expired, or already claimed by the same ``owner`` string (a restarted worker that reuses
  its name takes its own jobs back without waiting). Two claimers racing for one key get
  exactly one winner.
* A holder that dies (SIGKILL, power loss, lost network) stops renewing; once its lease has
  run out the next ``claim`` takes the key over. ``attempts`` counts the claims in a row that
  ended unsettled (1 for a normal claim, 2 after one takeover; it starts again at 1 once a
  claim is completed or released), so ``max_attempts`` stops a job that keeps killing its
  workers without stopping a job that is merely redone or retried after a clean failure.
* Every claim carries a fresh ``token``. ``renew``, ``complete`` and ``release`` act only while
  the row still carries the caller's token, so a holder whose lease ran out and was taken over
  learns it (``ClaimLost``) instead of touching the new holder's claim. Passing the caller's
  Session to ``complete`` puts "done" in the same transaction as the job's own result rows: if
  the claim was lost the whole transaction fails, so a job taken over is never recorded twice.
* A claim whose lease ran out but that nobody took over is still its holder's: renewing or
  completing it succeeds. Exclusion holds either way, because every transition below is one
  atomic statement on the key's row.
* What the claims cannot give: a holder frozen for longer than its lease (a stopped process,
  a suspended laptop) goes on working after someone else took over. The token check stops it
  at ``complete``; side effects outside the database (an output file) must be written so that a
  second writer is harmless (a temporary file renamed into place), which the pipeline already does.

Why one upsert per transition
-----------------------------
``claim`` is ``INSERT ... ON CONFLICT (job_key) DO UPDATE ... WHERE <takeable> RETURNING``;
``renew``/``complete``/``release`` are ``UPDATE ... WHERE token = :token ... RETURNING``. PostgreSQL
runs ON CONFLICT DO UPDATE atomically under READ COMMITTED: a concurrent claimer waits for the
row lock and re-checks the WHERE against the committed row, so it sees the winner's lease.
SQLite (3.35 or newer, for RETURNING) runs it under its single write lock. The same statement
thus works on both, needs no retry loop and no SERIALIZABLE isolation, and claims a key that
has no row yet, which ``SELECT ... FOR UPDATE SKIP LOCKED`` cannot (it only locks rows that
exist, and SQLite has no row locks). SKIP LOCKED suits a queue of pending rows; here the job
list comes from the album walk, so claim-by-key fits.

Clocks
------
On PostgreSQL every time in a claim is the server's ``statement_timestamp()``: lease expiry is
decided on one clock, whatever the skew between the machines. (A claimer that first waited
for another's row lock dates its claim from its statement's start, milliseconds early: it then
sees leases as ending later, and its own lease is that much shorter, both on the safe side.)
Heartbeat intervals and waits
are measured on each process's monotonic clock, which skew does not affect. On SQLite all
processes share one machine and thus one clock, so the Python process's UTC time is used.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, Row
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import Executable

from db.models import ClaimStatus, JobClaim, UTCDateTime, utcnow

logger = logging.getLogger(__name__)

# Long enough that a busy machine (GIL-heavy preprocessing, a swap storm) rarely misses all of
# a lease's heartbeats; short enough that a dead holder's job waits about a minute to be taken
# over. One UPDATE per job every 20 s is nothing to either database.
DEFAULT_LEASE_S = 60.0
# Renewing every lease/3 tolerates two missed heartbeats before the lease runs out.
HEARTBEATS_PER_LEASE = 3
# How often a waiting claimer looks again (it also wakes when the holder's lease ends).
DEFAULT_POLL_S = 1.0

_JOB_KEY_RE = re.compile(r"[0-9a-f]{64}")
_TABLE = JobClaim.__table__
_MIN_SQLITE = (3, 35, 0)  # RETURNING

# What the claim functions accept: an Engine or a sessionmaker runs its own short transaction;
# a Session runs in the caller's transaction, which the caller commits.
Bind = Engine | sessionmaker[Session] | Session


class ClaimLost(RuntimeError):
    """The claim is no longer the caller's: its lease ran out and another owner took the key."""


@dataclass(frozen=True)
class Claim:
    """A claim held by ``owner`` on ``job_key`` until ``expires_at`` (database time)."""

    job_key: str
    owner: str
    token: str
    attempts: int
    claimed_at: datetime
    expires_at: datetime
    lease_s: float


@dataclass(frozen=True)
class ClaimRecord:
    """The stored state of one key's claim, read at ``checked_at`` (database time)."""

    job_key: str
    owner: str
    host: str
    pid: int
    status: ClaimStatus
    attempts: int
    claimed_at: datetime
    expires_at: datetime
    finished_at: datetime | None
    checked_at: datetime

    @property
    def live(self) -> bool:
        """Held by someone whose lease has not run out (the exact complement of takeable)."""
        return self.status is ClaimStatus.claimed and self.expires_at >= self.checked_at


def new_owner() -> str:
    """A unique owner name, ``host:pid:random``; use one per worker thread or process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(
    bind: Bind,
    job_key: str,
    owner: str,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    redo: bool = False,
    max_attempts: int | None = None,
) -> Claim | None:
    """Claim ``job_key`` for ``owner`` until ``lease_s`` from now, without waiting.

    None when another owner's lease is live, when the key is done (unless ``redo``, which
    takes a done key again but never a live one), or when the key's last ``max_attempts``
    claims all died unsettled (a job that keeps killing its workers stops being retried).
    """
    _check_key(job_key)
    _check_owner(owner)
    _check_seconds("lease_s", lease_s)
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise ValueError(f"max_attempts must be None or an int >= 1, got {max_attempts!r}")
    token = uuid.uuid4().hex

    def statement(dialect: str) -> Executable:
        now, expires = _now_and_later(dialect, lease_s)
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_TABLE)
        insert = insert.values(
            job_key=job_key,
            token=token,
            owner=owner,
            host=socket.gethostname(),
            pid=os.getpid(),
            status=ClaimStatus.claimed,
            attempts=1,
            claimed_at=now,
            expires_at=expires,
            finished_at=None,
        )
        row, new = _TABLE.c, insert.excluded
        takeable = [
            sa.or_(
                row.status != ClaimStatus.claimed,
                row.expires_at < new.claimed_at,
                row.owner == new.owner,
            )
        ]
        if not redo:
            takeable.append(row.status != ClaimStatus.done)
        if max_attempts is not None:
            takeable.append(sa.or_(row.status != ClaimStatus.claimed, row.attempts < max_attempts))
        replaced = {name: new[name] for name in ("token", "owner", "host", "pid", "status")}
        return insert.on_conflict_do_update(
            index_elements=[row.job_key],
            set_={
                **replaced,
                # Only a takeover continues the count; a settled claim starts it again.
                "attempts": sa.case(
                    (row.status == ClaimStatus.claimed, row.attempts + 1), else_=sa.literal(1)
                ),
                "claimed_at": new.claimed_at,
                "expires_at": new.expires_at,
                "finished_at": None,
            },
            where=sa.and_(*takeable),
        ).returning(row.attempts, row.claimed_at, row.expires_at)

    got = _run(bind, statement)
    if got is None:
        return None
    return Claim(job_key, owner, token, got.attempts, got.claimed_at, got.expires_at, lease_s)


def renew(bind: Bind, held: Claim, *, lease_s: float | None = None) -> Claim:
    """Extend ``held`` to ``lease_s`` (default: its own) from now; ``ClaimLost`` if it was lost."""
    lease = held.lease_s if lease_s is None else lease_s
    _check_seconds("lease_s", lease)

    def statement(dialect: str) -> Executable:
        _, expires = _now_and_later(dialect, lease)
        mine = _mine(held, ClaimStatus.claimed)
        return mine.values(expires_at=expires).returning(_TABLE.c.expires_at)

    got = _run(bind, statement)
    if got is None:
        raise ClaimLost(f"claim on {held.job_key} by {held.owner!r} was lost before renewal")
    return Claim(
        held.job_key, held.owner, held.token, held.attempts, held.claimed_at, got.expires_at, lease
    )


def complete(bind: Bind, held: Claim) -> None:
    """Mark the job done; ``ClaimLost`` if the claim was lost. Completing twice is harmless.

    With the caller's Session, "done" commits or rolls back together with the job's results.
    """

    def statement(dialect: str) -> Executable:
        now, _ = _now_and_later(dialect, None)
        finished_at = sa.func.coalesce(_TABLE.c.finished_at, now)  # the first completion's time
        return (
            _mine(held, ClaimStatus.claimed, ClaimStatus.done)
            .values(status=ClaimStatus.done, finished_at=finished_at)
            .returning(_TABLE.c.job_key)
        )

    if _run(bind, statement) is None:
        raise ClaimLost(f"claim on {held.job_key} by {held.owner!r} was lost before completion")


def release(bind: Bind, held: Claim) -> bool:
    """Give the job back unfinished so anyone may claim it now; False if it was no longer held."""

    def statement(dialect: str) -> Executable:
        now, _ = _now_and_later(dialect, None)
        return (
            _mine(held, ClaimStatus.claimed)
            .values(status=ClaimStatus.released, expires_at=now, finished_at=now)
            .returning(_TABLE.c.job_key)
        )

    return _run(bind, statement) is not None


def lookup(bind: Bind, job_key: str) -> ClaimRecord | None:
    """The stored claim on ``job_key``, or None if it was never claimed."""
    _check_key(job_key)

    def statement(dialect: str) -> Executable:
        now, _ = _now_and_later(dialect, None)
        # The token stays out: it is the holder's proof of ownership, not something to read.
        columns = [c for c in _TABLE.c if c.name != "token"]
        return sa.select(*columns, now.label("checked_at")).where(_TABLE.c.job_key == job_key)

    got = _run(bind, statement)
    return None if got is None else ClaimRecord(**got._asdict())


def acquire(
    bind: Bind,
    job_key: str,
    owner: str,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    wait_s: float | None = 0.0,
    poll_s: float = DEFAULT_POLL_S,
    redo: bool = False,
    max_attempts: int | None = None,
) -> Claim | None:
    """``claim``, waiting up to ``wait_s`` (None: no limit) while another owner's claim is live.

    Returns None at once when the key is done (without ``redo``) or out of attempts, and after
    ``wait_s`` when it is still held. Between tries it sleeps ``poll_s``, or less when the
    holder's lease runs out sooner, so a dead holder's job is taken over promptly.
    """
    if wait_s is not None:
        _check_seconds("wait_s", wait_s, zero_ok=True)
    _check_seconds("poll_s", poll_s)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while True:
        got = claim(bind, job_key, owner, lease_s=lease_s, redo=redo, max_attempts=max_attempts)
        if got is not None:
            return got
        record = lookup(bind, job_key)
        if record is not None and not record.live:
            if (record.status is ClaimStatus.done and not redo) or (
                record.status is ClaimStatus.claimed
                and max_attempts is not None
                and record.attempts >= max_attempts
            ):
                return None
        left = math.inf if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return None
        # A record that is not live was freed between the two statements: try again at once.
        until_free = (
            (record.expires_at - record.checked_at).total_seconds()
            if record is not None and record.live
            else 0.0
        )
        time.sleep(max(0.0, min(poll_s, left, until_free + 0.01)))


# ---------------------------------------------------------------- statements and checks


def _mine(held: Claim, *statuses: ClaimStatus) -> sa.Update:
    return sa.update(_TABLE).where(
        _TABLE.c.job_key == held.job_key,
        _TABLE.c.token == held.token,
        _TABLE.c.status.in_(statuses),
    )


def _now_and_later(
    dialect: str, lease_s: float | None
) -> tuple[ColumnElement[datetime], ColumnElement[datetime]]:
    """(now, now + lease) as SQL: the server's clock on PostgreSQL, this machine's on SQLite."""
    lease = timedelta(seconds=lease_s or 0.0)
    if dialect == "postgresql":
        # statement_timestamp, not now(): a Session passed in may hold a long transaction.
        now: ColumnElement[datetime] = sa.func.statement_timestamp(type_=UTCDateTime())
        return now, now + sa.literal(lease, sa.Interval())
    if dialect == "sqlite":
        at = utcnow()
        return sa.literal(at, UTCDateTime()), sa.literal(at + lease, UTCDateTime())
    raise ValueError(f"job claims need PostgreSQL or SQLite, not {dialect!r}")


def _run(bind: Bind, build: Callable[[str], Executable]) -> Row[Any] | None:
    """Execute the statement ``build(dialect)`` in a transaction of its own or the session's."""
    if isinstance(bind, Session):
        return bind.execute(build(_dialect_of(bind))).one_or_none()
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return connection.execute(build(_dialect_of(connection))).one_or_none()
    if isinstance(bind, sessionmaker):
        with bind.begin() as session:
            return session.execute(build(_dialect_of(session))).one_or_none()
    raise ValueError(f"expected an Engine, a sessionmaker or a Session, got {bind!r}")


def _dialect_of(connectable: sa.Connection | Session) -> str:
    if isinstance(connectable, Session):
        dialect = connectable.get_bind().dialect
    else:
        dialect = connectable.dialect
    if dialect.name == "sqlite":
        version = dialect.dbapi.sqlite_version_info  # type: ignore[union-attr]
        if tuple(version) < _MIN_SQLITE:
            raise RuntimeError(f"job claims need SQLite >= 3.35 (RETURNING); this is {version}")
    return dialect.name


def _check_key(job_key: str) -> None:
    if not isinstance(job_key, str) or not _JOB_KEY_RE.fullmatch(job_key):
        raise ValueError(f"job_key must be 64 lowercase hex characters, got {job_key!r}")


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner.strip():
        raise ValueError(f"owner must be a non-empty string, got {owner!r}")


def _check_seconds(name: str, value: float, *, zero_ok: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


__all__ = [
    "DEFAULT_LEASE_S",
    "DEFAULT_POLL_S",
    "HEARTBEATS_PER_LEASE",
    "Bind",
    "Claim",
    "ClaimLost",
    "ClaimRecord",
    "acquire",
    "claim",
    "complete",
    "lookup",
    "new_owner",
    "release",
    "renew",
]
