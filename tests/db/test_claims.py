"""Claims in one process: exclusion, lease expiry and takeover, renewal, completion, heartbeat."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from db import claim_holder, claims
from db.engine import make_session_factory
from db.models import Album, ClaimStatus, JobClaim, utcnow
from tests.db.helpers import sha

KEY = sha("job")


def _expire(engine: Engine, key: str) -> None:
    """Make the key's lease end an hour ago, as if its holder had died long since."""
    with engine.begin() as connection:
        past = utcnow() - timedelta(hours=1)
        connection.execute(update(JobClaim).where(JobClaim.job_key == key).values(expires_at=past))


def _status(engine: Engine, key: str) -> ClaimStatus:
    record = claims.lookup(engine, key)
    assert record is not None
    return record.status


def test_racing_owners_get_exactly_one_claim(engine: Engine) -> None:
    # Fails if the upsert's WHERE let a live claim be taken, or if two inserts both won.
    owners = [f"owner-{i}" for i in range(8)]
    start = threading.Barrier(len(owners))
    won: list[claims.Claim] = []

    def race(owner: str) -> None:
        start.wait()
        got = claims.claim(engine, KEY, owner)
        if got is not None:
            won.append(got)

    threads = [threading.Thread(target=race, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    record = claims.lookup(engine, KEY)
    assert record is not None and record.owner == won[0].owner and record.attempts == 1


def test_live_lease_is_kept_and_expired_lease_is_taken_over(engine: Engine) -> None:
    first = claims.claim(engine, KEY, "A", lease_s=60)
    assert first is not None
    assert claims.claim(engine, KEY, "B") is None  # live: A keeps it
    _expire(engine, KEY)
    second = claims.claim(engine, KEY, "B", lease_s=60)
    assert second is not None and second.attempts == 2
    # A learns it lost the job and cannot touch B's claim.
    with pytest.raises(claims.ClaimLost):
        claims.renew(engine, first)
    with pytest.raises(claims.ClaimLost):
        claims.complete(engine, first)
    assert claims.release(engine, first) is False
    record = claims.lookup(engine, KEY)
    assert record is not None
    assert (record.owner, record.status, record.live) == ("B", ClaimStatus.claimed, True)


def test_lease_runs_out_on_the_database_clock(engine: Engine) -> None:
    # A real (short) lease, not a forced one: expires_at is claimed_at + lease, and a waiter
    # gets the key only once that time has passed on the database's clock.
    first = claims.claim(engine, KEY, "A", lease_s=0.5)
    assert first is not None
    assert first.expires_at - first.claimed_at == timedelta(seconds=0.5)
    second = claims.acquire(engine, KEY, "B", wait_s=30, poll_s=0.05)
    assert second is not None
    assert second.claimed_at > first.expires_at


def test_renew_extends_the_lease(engine: Engine) -> None:
    held = claims.claim(engine, KEY, "A", lease_s=30)
    assert held is not None
    renewed = claims.renew(engine, held, lease_s=600)
    assert renewed.token == held.token and renewed.lease_s == 600
    assert renewed.expires_at - held.expires_at > timedelta(seconds=500)
    record = claims.lookup(engine, KEY)
    assert record is not None and record.expires_at == renewed.expires_at
    # Renewed past a forced expiry, nobody having taken over: the claim stays A's.
    _expire(engine, KEY)
    assert claims.renew(engine, renewed).expires_at > utcnow()
    assert claims.claim(engine, KEY, "B") is None


def test_complete_makes_the_key_unclaimable(engine: Engine) -> None:
    held = claims.claim(engine, KEY, "A")
    assert held is not None
    claims.complete(engine, held)
    claims.complete(engine, held)  # idempotent for its holder
    _expire(engine, KEY)  # a done key stays done however old its lease
    assert claims.claim(engine, KEY, "B") is None
    assert claims.claim(engine, KEY, "A") is None
    assert claims.acquire(engine, KEY, "B", wait_s=30) is None  # at once: nothing to wait for
    with pytest.raises(claims.ClaimLost):
        claims.renew(engine, held)
    record = claims.lookup(engine, KEY)
    assert record is not None and record.status is ClaimStatus.done
    assert record.finished_at is not None
    # redo takes a done key again, but never someone's live claim.
    again = claims.claim(engine, KEY, "B", redo=True)
    assert again is not None and again.attempts == 1  # a settled claim starts the count again
    assert claims.claim(engine, KEY, "C", redo=True) is None


def test_release_lets_anyone_claim_at_once(engine: Engine) -> None:
    held = claims.claim(engine, KEY, "A", lease_s=600)
    assert held is not None
    assert claims.release(engine, held) is True
    assert claims.release(engine, held) is False
    assert _status(engine, KEY) is ClaimStatus.released
    assert claims.claim(engine, KEY, "B") is not None


def test_same_owner_takes_its_claim_back_and_the_old_handle_goes_stale(engine: Engine) -> None:
    old = claims.claim(engine, KEY, "worker-1")
    new = claims.claim(engine, KEY, "worker-1")  # e.g. the worker restarted under its name
    assert old is not None and new is not None and new.token != old.token
    with pytest.raises(claims.ClaimLost):
        claims.renew(engine, old)
    claims.renew(engine, new)


def test_max_attempts_stops_a_job_that_keeps_killing_its_workers(engine: Engine) -> None:
    assert claims.claim(engine, KEY, "A", max_attempts=2) is not None
    _expire(engine, KEY)
    assert claims.claim(engine, KEY, "B", max_attempts=2) is not None
    _expire(engine, KEY)
    assert claims.claim(engine, KEY, "C", max_attempts=2) is None
    assert claims.acquire(engine, KEY, "C", max_attempts=2, wait_s=30) is None
    third = claims.claim(engine, KEY, "C", max_attempts=3)
    assert third is not None and third.attempts == 3
    # Settling resets the count: a job redone or retried after a clean failure is no poison.
    claims.release(engine, third)
    assert claims.claim(engine, KEY, "D", max_attempts=1) is not None


def test_complete_in_the_callers_transaction_rolls_back_with_it(engine: Engine) -> None:
    factory = make_session_factory(engine)
    held = claims.claim(engine, KEY, "A")
    assert held is not None
    with pytest.raises(RuntimeError, match="recording failed"):
        with factory.begin() as session:
            session.add(Album(root="/albums/first"))
            claims.complete(session, held)
            raise RuntimeError("recording failed")
    assert _status(engine, KEY) is ClaimStatus.claimed  # rolled back with the album
    # Lost meanwhile: completing fails inside the transaction, so the results vanish too.
    _expire(engine, KEY)
    assert claims.claim(engine, KEY, "B") is not None
    with pytest.raises(claims.ClaimLost):
        with factory.begin() as session:
            session.add(Album(root="/albums/second"))
            claims.complete(session, held)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Album)) == 0


@pytest.mark.slow
def test_heartbeat_keeps_a_long_job_past_its_lease(engine: Engine) -> None:
    # Fails if the heartbeat does not renew: B would take the key after one lease (1 s).
    with claim_holder.hold(engine, KEY, "A", lease_s=1.0) as held:
        assert held is not None
        first_expiry = held.claim.expires_at
        until = time.monotonic() + 3.5
        while time.monotonic() < until:
            assert claims.claim(engine, KEY, "B", lease_s=1.0) is None
            time.sleep(0.1)
        assert held.claim.expires_at > first_expiry + timedelta(seconds=2)
        assert not held.lost
    record = claims.lookup(engine, KEY)
    assert record is not None and (record.owner, record.status) == ("A", ClaimStatus.done)


def test_heartbeat_notices_a_takeover(engine: Engine) -> None:
    with pytest.raises(claims.ClaimLost):
        with claim_holder.hold(engine, KEY, "A", lease_s=0.6) as held:
            assert held is not None
            # A freezes past its lease (simulated) and B takes over.
            taken = None
            while taken is None:
                _expire(engine, KEY)
                taken = claims.claim(engine, KEY, "B", lease_s=600)
            deadline = time.monotonic() + 10
            while not held.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert held.lost
            with pytest.raises(claims.ClaimLost):
                held.check()
        # Leaving the block normally tries to complete: ClaimLost, and B's claim is untouched.
    record = claims.lookup(engine, KEY)
    assert record is not None and (record.owner, record.status) == ("B", ClaimStatus.claimed)


def test_hold_releases_when_the_block_raises(engine: Engine) -> None:
    with pytest.raises(OSError, match="disk full"):
        with claim_holder.hold(engine, KEY, "A") as held:
            assert held is not None
            raise OSError("disk full")
    assert _status(engine, KEY) is ClaimStatus.released
    with claim_holder.hold(engine, KEY, "B") as again:
        assert again is not None and again.claim.attempts == 1


def test_hold_yields_none_while_another_owner_holds_the_key(engine: Engine) -> None:
    assert claims.claim(engine, KEY, "A") is not None
    with claim_holder.hold(engine, KEY, "B") as held:
        assert held is None
    assert claims.lookup(engine, KEY).owner == "A"  # type: ignore[union-attr]


def test_hold_settled_inside_the_block(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with claim_holder.hold(factory, KEY, "A") as held:
        assert held is not None
        with factory.begin() as session:
            session.add(Album(root="/albums/recorded"))
            held.complete(session)
    assert _status(engine, KEY) is ClaimStatus.done
    other = sha("other job")
    with claim_holder.hold(factory, other, "A") as held:
        assert held is not None
        assert held.release() is True  # e.g. a failure to retry later; the exit keeps it released
    assert _status(engine, other) is ClaimStatus.released
    # A machine waiting on the key re-claims the done job (redo) to check it before this block has
    # ended: the exit must not complete it a second time and fail a job that succeeded.
    checked = sha("checked job")
    with claim_holder.hold(factory, checked, "A") as held:
        assert held is not None
        with factory.begin() as session:
            held.complete(session)
        assert claims.claim(engine, checked, "B", redo=True) is not None
    record = claims.lookup(engine, checked)
    assert record is not None and record.status is ClaimStatus.claimed and record.owner == "B"


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"job_key": "abc"}, "'abc'"),
        ({"job_key": KEY.upper()}, KEY.upper()),
        ({"owner": " "}, "' '"),
        ({"lease_s": 0}, "0"),
        ({"lease_s": float("nan")}, "nan"),
        ({"max_attempts": 0}, "0"),
        ({"max_attempts": True}, "True"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_value(
    engine: Engine, kwargs: dict[str, object], bad: str
) -> None:
    arguments: dict[str, object] = {"job_key": KEY, "owner": "A", **kwargs}
    with pytest.raises(ValueError, match=bad.replace("(", r"\(")):
        claims.claim(engine, **arguments)  # type: ignore[arg-type]
    assert claims.lookup(engine, KEY) is None


def test_hold_refuses_a_session(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        with pytest.raises(ValueError, match="Session"):
            with claim_holder.hold(session, KEY):  # type: ignore[arg-type]
                pass
