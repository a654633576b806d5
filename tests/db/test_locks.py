"""Named advisory locks in one process: stable keys, exclusion, release, bad input."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db.engine import make_engine
from db.locks import LockTimeout, advisory_lock, file_lock, lock_key


def test_lock_key_is_stable_and_fits_a_bigint() -> None:
    # Pinned: processes of different releases must agree on the key for one name.
    assert lock_key("faiss-sync:album-1") == -2189419442752216830
    assert lock_key("migrations") == -2934792460211131168
    keys = {lock_key(f"album-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)


def test_second_holder_times_out_then_gets_in_after_release(engine: Engine) -> None:
    name = f"sync:{uuid.uuid4()}"
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with advisory_lock(engine, name):
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(30)
        with pytest.raises(LockTimeout, match=name):
            with advisory_lock(engine, name, timeout_s=0.2, poll_s=0.05):
                pass
    finally:
        leave.set()
        holder.join()
    with advisory_lock(engine, name, timeout_s=0):
        pass


def test_lock_is_released_when_the_block_raises(engine: Engine) -> None:
    name = f"sync:{uuid.uuid4()}"
    with pytest.raises(RuntimeError):
        with advisory_lock(engine, name):
            raise RuntimeError("sync failed")
    with advisory_lock(engine, name, timeout_s=0):
        pass


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_lock_lives_on_the_server_and_leaves_with_the_block(engine: Engine) -> None:
    # pg_locks shows a bigint key as two unsigned halves; rebuilt in bigint it is the signed key.
    count = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = :key"
    )
    prefix = f"sync:{uuid.uuid4()}"
    names = [f"{prefix}:{i}" for i in range(64)]
    # Keys of both signs, the negative ones being where a sign slip would show.
    for name in (min(names, key=lock_key), max(names, key=lock_key)):
        key = lock_key(name)
        with engine.connect() as probe:
            with advisory_lock(engine, name):
                assert probe.execute(count, {"key": key}).scalar() == 1
            assert probe.execute(count, {"key": key}).scalar() == 0


def test_sqlite_lock_file_sits_beside_the_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'refsr.db'}")
    try:
        with advisory_lock(engine, "sync:album-1"):
            assert [p.name for p in (tmp_path / "refsr.db.locks").iterdir()] == [
                f"{lock_key('sync:album-1') & (2**64 - 1):016x}.lock"
            ]
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_refused() -> None:
    engine = make_engine("sqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        with advisory_lock(engine, "sync"):
            pass


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"name": ""}, "''"), ({"timeout_s": -1.0}, "-1.0"), ({"poll_s": 0.0}, "0.0")],
)
def test_bad_input_is_a_value_error_naming_the_value(
    tmp_path: Path, kwargs: dict[str, object], bad: str
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'refsr.db'}")
    arguments: dict[str, object] = {"name": "sync", **kwargs}
    with pytest.raises(ValueError, match=bad):
        with advisory_lock(engine, **arguments):  # type: ignore[arg-type]
            pass


def test_file_lock_excludes_a_second_opener(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with file_lock(path):
        with pytest.raises(LockTimeout):
            with file_lock(path, timeout_s=0):
                pass
    with file_lock(path, timeout_s=0):
        pass
