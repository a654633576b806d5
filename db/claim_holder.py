"""Claims kept alive while work runs: ``hold`` claims a job key and renews it from a heartbeat thread.

See :mod:`db.claims` for the guarantees; this module adds the heartbeat and the settle-on-exit rules.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.claims import (
    DEFAULT_LEASE_S,
    DEFAULT_POLL_S,
    HEARTBEATS_PER_LEASE,
    Claim,
    ClaimLost,
    acquire,
    complete,
    new_owner,
    release,
    renew,
)

logger = logging.getLogger(__name__)


class HeldClaim:
    """A claim kept alive by a heartbeat thread while a ``hold`` block runs.

    The block may settle it itself: ``complete(session)`` inside the transaction that records
    the job's results (commit that transaction before the block ends), ``complete()``, or
    ``release()`` (e.g. for a failure that should be retried later). Whatever is left unsettled
    is completed when the block ends normally and released when it raises.
    """

    def __init__(self, bind: Engine | sessionmaker[Session], held: Claim) -> None:
        self._bind = bind
        self._claim = held
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._settled = False
        self._completed_in_session = False
        self._thread = threading.Thread(
            target=self._beat, name=f"claim-heartbeat-{held.job_key[:12]}", daemon=True
        )

    @property
    def claim(self) -> Claim:
        """The claim as last renewed."""
        with self._guard:
            return self._claim

    @property
    def lost(self) -> bool:
        """True once a heartbeat found the claim taken over; the block should stop its work."""
        return self._lost.is_set()

    def check(self) -> None:
        """Raise ``ClaimLost`` if a heartbeat found the claim taken over (call at safe points)."""
        if self._lost.is_set():
            raise ClaimLost(f"claim on {self._claim.job_key} by {self._claim.owner!r} was lost")

    def complete(self, session: Session | None = None) -> None:
        """Mark the job done, in ``session``'s transaction if given, else in one of its own."""
        if session is None:
            self._stop_heartbeat()
            complete(self._bind, self.claim)
            self._settled = True
        else:
            # Not joined: on PostgreSQL a renewal in flight waits for this session's row lock
            # until the caller commits. It then finds the claim done and stops quietly.
            self._stop.set()
            complete(session, self.claim)
            self._completed_in_session = True

    def release(self) -> bool:
        """Give the job back unfinished; False if it was no longer held."""
        self._stop_heartbeat()
        self._settled = True
        return release(self._bind, self.claim)

    def _start(self) -> None:
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            # Bounded: a renewal stuck behind an uncommitted complete(session) must not hang us.
            self._thread.join(timeout=self._claim.lease_s)
            if self._thread.is_alive():
                logger.warning("heartbeat of %s did not stop within its lease", self._claim.job_key)

    def _finish(self, succeeded: bool) -> None:
        self._stop_heartbeat()
        if self._settled:
            return
        self._settled = True
        if succeeded:
            if self._completed_in_session:
                # Done in the caller's committed transaction. The row may already be another
                # owner's: a waiting machine re-claims a done job to check it (redo), and completing
                # it again here would find it gone and fail a job that succeeded.
                return
            complete(self._bind, self.claim)
            return
        try:
            release(self._bind, self.claim)
        except Exception as exc:  # the block's own exception matters more; the lease ends anyway
            logger.warning("could not release %s: %s", self._claim.job_key, exc)

    def _beat(self) -> None:
        interval = self._claim.lease_s / HEARTBEATS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                renewed = renew(self._bind, self.claim)
            except ClaimLost:
                if not self._stop.is_set():
                    self._lost.set()
                    logger.warning("claim on %s was taken over", self._claim.job_key)
                return
            except Exception as exc:
                # A database hiccup: keep beating; if it lasts past the lease, the next renewal
                # tells whether someone took over.
                logger.warning("heartbeat for %s failed: %s", self._claim.job_key, exc)
                continue
            with self._guard:
                self._claim = renewed


@contextlib.contextmanager
def hold(
    bind: Engine | sessionmaker[Session],
    job_key: str,
    owner: str | None = None,
    *,
    lease_s: float = DEFAULT_LEASE_S,
    wait_s: float | None = 0.0,
    poll_s: float = DEFAULT_POLL_S,
    redo: bool = False,
    max_attempts: int | None = None,
) -> Iterator[HeldClaim | None]:
    """Claim ``job_key`` (see ``acquire``) and keep it alive for the block.

    Yields None when the claim was not obtained (the caller skips the job), else a
    ``HeldClaim`` renewed every ``lease_s / 3`` by a daemon thread. On exit the claim is
    completed if the block ended normally and released if it raised, unless the block settled
    it already. ``owner`` defaults to ``new_owner()``.
    """
    if isinstance(bind, Session) or not isinstance(bind, Engine | sessionmaker):
        raise ValueError(
            f"hold needs an Engine or a sessionmaker (its heartbeat thread opens its own "
            f"connections), got {bind!r}"
        )
    got = acquire(
        bind,
        job_key,
        new_owner() if owner is None else owner,
        lease_s=lease_s,
        wait_s=wait_s,
        poll_s=poll_s,
        redo=redo,
        max_attempts=max_attempts,
    )
    if got is None:
        yield None
        return
    held = HeldClaim(bind, got)
    held._start()
    try:
        yield held
    except BaseException:
        held._finish(succeeded=False)
        raise
    held._finish(succeeded=True)
__all__ = ["HeldClaim", "hold"]
