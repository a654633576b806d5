"""Claims and advisory locks across real processes: each job once, dead holders taken over."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine, select

from db import claims
from db.engine import make_session_factory
from db.locks import LockTimeout, advisory_lock
from db.models import Album, ClaimStatus, JobClaim
from tests.db.helpers import expect_line, sha, spawn

pytestmark = pytest.mark.slow  # real processes and real leases, several seconds each

WORKER = Path(__file__).with_name("claim_worker.py")
KEY = sha("job")


def test_processes_split_the_keys_and_do_each_once(engine: Engine, db_url: str) -> None:
    # Fails if two processes could hold one key: they walk the keys in the same order from the
    # same moment, so without exclusion every key would be done by several of them.
    keys = [sha(f"job-{i}") for i in range(30)]
    start_at = str(time.time() + 3.0)
    workers = [spawn(WORKER, "jobs", db_url, start_at, f"w{i}", *keys) for i in range(4)]
    done: list[str] = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        done += [line.split()[1] for line in out.splitlines()]
    assert sorted(done) == sorted(keys)
    with make_session_factory(engine)() as session:
        roots = session.scalars(select(Album.root)).all()
        rows = session.scalars(select(JobClaim)).all()
    assert sorted(root.split("/")[2] for root in roots) == sorted(keys)
    assert {(row.status, row.attempts) for row in rows} == {(ClaimStatus.done, 1)}
    assert len(rows) == len(keys)
    # The album was shared out, not done by whoever started first.
    assert len({root.split("/")[3] for root in roots}) > 1


def test_killed_holder_is_taken_over_after_its_lease(engine: Engine, db_url: str) -> None:
    holder = spawn(WORKER, "hold", db_url, KEY, "doomed", "1.5")
    try:
        assert expect_line(holder, "claimed") == "claimed 1"
        time.sleep(3.5)  # more than two leases: only the holder's heartbeat keeps the key
        assert claims.claim(engine, KEY, "survivor", lease_s=60) is None
    finally:
        holder.kill()
        holder.communicate()
    assert holder.returncode == -signal.SIGKILL
    dead = claims.lookup(engine, KEY)
    assert dead is not None and (dead.owner, dead.status) == ("doomed", ClaimStatus.claimed)
    taken = claims.acquire(engine, KEY, "survivor", wait_s=60, poll_s=0.1)
    assert taken is not None and taken.attempts == 2
    assert taken.claimed_at > dead.expires_at
    claims.complete(engine, taken)


@contextlib.contextmanager
def _lock_holder(
    db_url: str, tmp_path: Path, hold_s: float
) -> Iterator[tuple[str, Popen[str], Path]]:
    """A process holding a fresh lock name for ``hold_s``, then writing the marker file it
    yields; killed (if still alive) on exit."""
    name = f"faiss-sync:{uuid.uuid4()}"
    marker = tmp_path / "released"
    holder = spawn(WORKER, "lock", db_url, name, str(marker), str(hold_s))
    try:
        expect_line(holder, "locked")
        yield name, holder, marker
    finally:
        holder.kill()
        holder.communicate()


def _assert_busy(engine: Engine, name: str, timeout_s: float) -> None:
    with pytest.raises(LockTimeout):
        with advisory_lock(engine, name, timeout_s=timeout_s):
            pass


def test_advisory_lock_keeps_another_process_out_until_released(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with _lock_holder(db_url, tmp_path, hold_s=2.0) as (name, holder, marker):
        _assert_busy(engine, name, timeout_s=0)
        with advisory_lock(engine, name + "-other", timeout_s=0):
            pass  # other names stay free
        # Waits for the holder; fails if it got in while the holder was still inside.
        with advisory_lock(engine, name):
            assert marker.read_text() == "released"
        _, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err


def test_killed_holder_releases_the_advisory_lock(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with _lock_holder(db_url, tmp_path, hold_s=3600) as (name, holder, marker):
        _assert_busy(engine, name, timeout_s=0.3)
    assert holder.returncode == -signal.SIGKILL
    with advisory_lock(engine, name, timeout_s=30):
        pass
    assert not marker.exists()  # the holder never left its block: the lock died with it
