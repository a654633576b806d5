"""Durable writes and file hashes: atomic replacement, permissions, no leftovers, streamed hashing."""
from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest

from durable.files import atomic_write, sha256_file


def test_atomic_write_replaces_keeps_mode_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "a.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"one"))
    assert target.read_bytes() == b"one" and stat.S_IMODE(target.stat().st_mode) == 0o644
    os.chmod(target, 0o600)
    atomic_write(target, lambda tmp: tmp.write_bytes(b"two"))
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_sha256_file_streams_in_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected
    with pytest.raises(ValueError, match="chunk"):
        sha256_file(path, chunk=0)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_sha256_file_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        sha256_file(fifo)  # a blocking open() would hang here forever
    with pytest.raises(OSError, match="not a regular file"):
        sha256_file(tmp_path)


def test_stale_temp_files_of_killed_writes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    from durable.files import remove_stale_temps

    attention = tmp_path / ".refsr" / "attention"
    attention.mkdir(parents=True)
    stale = attention / ".abc.npz.k3j_9x2q.tmp"
    live = tmp_path / ".photo.jpg.a1b2c3d4.tmp"
    mine = tmp_path / ".notes.tmp"  # not a name atomic_write makes
    for path in (stale, live, mine):
        path.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    os.utime(mine, (old, old))
    assert remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and mine.exists() and not stale.exists()


def test_new_files_get_the_mode_open_would_give(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640


def test_a_name_near_the_255_byte_limit_is_written_through_a_short_temp_name(tmp_path: Path) -> None:
    from durable.files import remove_stale_temps

    target = tmp_path / ("é" * 123 + ".png")  # 250 bytes: the temp name used to add 14 and pass 255
    seen = []
    atomic_write(target, lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert target.read_bytes() == b"x" and len(os.fsencode(seen[0])) < 40
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    stale = tmp_path / seen[0]
    stale.write_bytes(b"left by a kill")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temps(tmp_path) == [stale]  # still a name the clean-up knows
