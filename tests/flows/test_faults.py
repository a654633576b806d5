"""Faults a hostile album and a hard kill find, met through the real `refsr` console script (issue 14)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.flows.test_cli import _enhance_args, _env, _refsr

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
