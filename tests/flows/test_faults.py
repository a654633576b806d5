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
