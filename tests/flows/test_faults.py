"""Faults a hostile album and a hard kill find, met through the real `refsr` console script (issue 14)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from db.engine import head_revision

from tests.flows.cli.test_cli import _enhance_args, _env, _finish, _refsr, _start

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_a_photo_is_reported_not_opened(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album = make_album(2)
    os.mkfifo(album / "x.jpg")  # opened for reading, it would wait for a writer forever
    home = tmp_path / "h"
    indexed = _refsr(["index", str(album), "--home", str(home), "--embedder", "fallback", "--no-progress"],
                     _env(tmp_path), tmp_path / "index")
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert "x.jpg" in indexed.stdout and "not a regular file (a FIFO)" in indexed.stdout
    enhanced = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / "enhance")
    assert enhanced.returncode == 0, enhanced.stderr[-2000:]
    assert "x.jpg" not in {p.name for p in (album / "enhanced").rglob("*")}


def test_outputs_never_leave_their_folder_nor_come_back_as_photos(make_album, tiny_model: Path,
                                                                  tmp_path: Path) -> None:
    album = make_album(2)
    home = tmp_path / "h"
    out = album / "scene1" / "out2"  # an output folder inside the album, under a name no scan knows
    victim = tmp_path / "victim" / "small"
    victim.mkdir(parents=True)
    (victim / "scene0.jpg").write_bytes(b"an unrelated photo of someone else's")
    out.mkdir()
    (out / "scene0").symlink_to(victim.parent, target_is_directory=True)

    enhanced = _refsr([*_enhance_args(album, home, tiny_model), "--out", str(out)], _env(tmp_path),
                      tmp_path / "enhance")
    assert enhanced.returncode == 1, enhanced.stderr[-2000:]  # scene0 refused, scene1 enhanced
    assert (victim / "scene0.jpg").read_bytes() == b"an unrelated photo of someone else's"
    assert "outside the output folder" in enhanced.stdout and "scene0/small/scene0.jpg" in enhanced.stdout
    assert (out / "scene1" / "small" / "scene1.jpg").is_file()

    report = _refsr(["report", str(album), "--out", str(album / "gallery"), "--home", str(home)], _env(tmp_path),
                    tmp_path / "report")
    assert report.returncode == 0, report.stderr[-2000:]
    assert list((album / "gallery").rglob("*.jpg")) or list((album / "gallery").rglob("*.png"))
    # Neither the outputs nor the gallery inside the album are photos of it.
    indexed = _refsr(["index", str(album), "--home", str(home), "--embedder", "fallback"], _env(tmp_path),
                     tmp_path / "index")
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert "nothing changed since the last scan" in indexed.stdout, indexed.stdout


# Loaded by Python at start-up from PYTHONPATH: kills the process (like SIGKILL: no handler, no
# rollback by us) at the n-th statement that builds the schema.
_KILL_AT_SCHEMA_STATEMENT = """
import os
from sqlalchemy import event
from sqlalchemy.engine import Engine
_seen = [0]

@event.listens_for(Engine, "before_cursor_execute")
def _kill(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith(("CREATE", "INSERT INTO ALEMBIC", "UPDATE ALEMBIC")):
        _seen[0] += 1
        if _seen[0] == int(os.environ["KILL_AT"]):
            os._exit(137)
"""


@pytest.mark.parametrize("kill_at", [1, 6, 12, 17])  # first table … the version stamp (17 statements)
def test_a_kill_during_the_first_database_creation_leaves_a_usable_database(kill_at: int, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_KILL_AT_SCHEMA_STATEMENT)
    home = tmp_path / "h"
    pythonpath = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    killed = _refsr(["history", "--home", str(home)], _env(tmp_path, PYTHONPATH=pythonpath, KILL_AT=str(kill_at)),
                    tmp_path / "killed")
    assert killed.returncode == 137, killed.stderr[-2000:]
    again = _refsr(["history", "--home", str(home)], _env(tmp_path), tmp_path / "again")
    assert again.returncode == 0, again.stderr[-2000:]
    with sqlite3.connect(home / "refsr.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]


def test_a_half_made_database_from_an_older_release_is_repaired(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    with sqlite3.connect(home / "refsr.db") as con:  # an older release killed after its first CREATE TABLE
        con.execute("CREATE TABLE albums (id INTEGER NOT NULL PRIMARY KEY, root TEXT NOT NULL)")
    done = _refsr(["history", "--home", str(home)], _env(tmp_path), tmp_path / "history")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "table albums already exists" not in done.stderr


def test_a_reference_deleted_mid_run_fails_no_target(make_album, tiny_model: Path, tmp_path: Path) -> None:
    album = make_album(3)
    home = tmp_path / "h"
    args = [*_enhance_args(album, home, tiny_model), "--top-k", "3"]  # every reference a candidate of every target
    proc, out = _start(args, _env(tmp_path, REFSR_FAULT_INJECT="target:1:pause"), tmp_path / "run")
    err = out.with_suffix(".err")
    for _ in range(3000):
        if "fault injection: pausing" in err.read_text() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert proc.poll() is None, err.read_text()[-2000:]
    (album / "scene0" / "ref.png").unlink()  # after the scan, while a target is under way
    done = _finish(proc, out)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]  # exit 1 if any target failed
    assert "gone since the scan" in done.stderr


def test_small_faults_temps_modes_a_dot_a_rename_and_another_out_folder(make_album, tiny_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.scan import default_extensions

    album = make_album(2)
    home = tmp_path / "h"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(album / "dot.png")  # a tracking pixel saved with a web page
    Image.new("RGB", (64, 48)).save(album / "anim.gif")
    (album / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")  # unread without pillow-heif
    attention = album / "enhanced" / ".refsr" / "attention"
    attention.mkdir(parents=True)
    stale = attention / ".0f.npz.k3j_9x2q.tmp"  # what a run killed inside save_attention leaves
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    first = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / "first")
    assert first.returncode == 0, first.stderr[-2000:]  # the dot is listed like an unreadable photo, no failure
    assert "dot.png: too small: 1×1 px" in first.stdout, first.stdout
    assert "1 GIF" in first.stdout and "not read" in first.stdout
    if "heic" not in default_extensions():
        assert "1 HEIC" in first.stdout
    assert not stale.exists()
    umask = os.umask(0)
    os.umask(umask)
    output = album / "enhanced" / "scene1" / "small" / "scene1.jpg"
    modes = {p.suffix: p.stat().st_mode & 0o777 for p in (output, *attention.glob("*.npz"))}
    assert modes == {".jpg": 0o666 & ~umask, ".npz": 0o666 & ~umask}

    (album / "scene1" / "small" / "scene1.jpg").rename(album / "scene1" / "small" / "renamed.jpg")
    second = _refsr(_enhance_args(album, home, tiny_model), _env(tmp_path), tmp_path / "second")
    assert second.returncode == 0, second.stderr[-2000:]
    row = next(line for line in second.stdout.splitlines() if "renamed.jpg" in line)
    assert "cached" in row, second.stdout  # same content: its job is reused, no model work
    assert (album / "enhanced" / "scene1" / "small" / "renamed.jpg").is_file() and not output.exists()

    # Another --out folder: every job is done already, so its outputs are copies, not model work again.
    other = tmp_path / "elsewhere"
    third = _refsr([*_enhance_args(album, home, tiny_model), "--out", str(other)], _env(tmp_path), tmp_path / "third")
    assert third.returncode == 0, third.stderr[-2000:]
    rows = [line for line in third.stdout.splitlines() if "scene" in line and "small" in line]
    assert rows and all("cached" in line for line in rows), third.stdout
    moved = album / "enhanced" / "scene1" / "small" / "renamed.jpg"
    assert (other / "scene1" / "small" / "renamed.jpg").read_bytes() == moved.read_bytes()  # the first folder keeps its own
