"""Copies in an album: found once per pair of contents, recorded, and answered by `refsr copies` and which-ref."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from db import queries
from flows.cli import main
from flows.copies import find_copies, neighbour_pairs
from flows.indexing import embed_task, scan_task
from flows.resources import resources_for
from tests.pipeline.matching.scenes import scene, tilt, view


def _save(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "JPEG", quality=quality)


def _album(root: Path) -> Path:
    """An original, its small messenger copy, a second view of the same place (no copy) and an unrelated photo."""
    place = scene(7, 800, 600)
    _save(root / "trip" / "original.jpg", place, 95)
    small = cv2.resize(place, (200, 150), interpolation=cv2.INTER_AREA)
    _save(root / "chat" / "copy.jpg", small, 70)
    _save(root / "trip" / "other-view.jpg", view(place, tilt(800, 600, 0.06, 0.1, 1.1), (800, 600)))
    _save(root / "trip" / "unrelated.jpg", scene(8, 800, 600))
    (root / "refsr.toml").write_text("[scan]\nmin_ref_side = 400\nmax_target_side = 256\n")
    return root


def test_index_finds_the_copy_once_and_the_cli_lists_it(tmp_path: Path, settings_for, capsys) -> None:
    album = _album(tmp_path / "album")
    settings = settings_for(embedder="fallback")
    counts = scan_task.fn(str(album), settings)
    with resources_for(settings).sessions() as session:
        ids = [p.id for p in queries.photos(session, counts.album_id)]
    for pid in ids:
        assert embed_task.fn(pid, str(album), settings).error is None

    found = find_copies(counts.album_id, str(album), "fallback:v1", settings)
    assert [(c.copy, c.original) for c in found.copies] == [("chat/copy.jpg", "trip/original.jpg")]
    assert found.copies[0].scale is not None and abs(found.copies[0].scale - 4.0) < 0.05
    assert found.checked >= 3 and found.failed == 0
    again = find_copies(counts.album_id, str(album), "fallback:v1", settings)
    assert again.checked == 0 and again.copies == found.copies  # each pair of contents is looked at once

    common = ["--home", str(settings.home)]
    assert main(["copies", str(album), "--json", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(Path(c["copy"]).name, Path(c["original"]).name) for c in listed] == [("copy.jpg", "original.jpg")]
    main(["which-ref", str(album / "chat" / "copy.jpg"), *common])
    assert "is a copy of" in capsys.readouterr().err
    assert main(["copies", str(tmp_path / "never-indexed"), *common]) == 2


def test_neighbour_pairs_are_each_rows_nearest_others() -> None:
    v = np.eye(4, dtype=np.float32)
    v[1] = v[0] * 0.9 + v[1] * 0.1
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert (0, 1) in neighbour_pairs(v, k=1)
    assert neighbour_pairs(v[:1]) == set()
    assert all(i < j for i, j in neighbour_pairs(v, k=2))


def test_a_later_methods_verdict_replaces_an_earlier_ones(tmp_path: Path, settings_for) -> None:
    album = _album(tmp_path / "album")
    settings = settings_for(embedder="fallback")
    counts = scan_task.fn(str(album), settings)
    sessions = resources_for(settings).sessions
    with sessions() as session:
        shas = {p.rel_path: p.sha256 for p in queries.photos(session, counts.album_id)}
    copy, original, other = shas["chat/copy.jpg"], shas["trip/original.jpg"], shas["trip/other-view.jpg"]
    with sessions.begin() as session:
        queries.record_copy_check(session, copy, original, "old", is_copy=False, inliers=3)
        queries.record_copy_check(session, other, original, "old", is_copy=True, copy_sha256=other, inliers=40)
    with sessions.begin() as session:
        queries.record_copy_check(session, copy, original, "new", is_copy=True, copy_sha256=copy, scale=4.0)
        queries.record_copy_check(session, other, original, "new", is_copy=False, inliers=40)
    with sessions() as session:
        found = [(c.copy.rel_path, c.original.rel_path) for c in queries.album_copies(session, counts.album_id)]
    assert found == [("chat/copy.jpg", "trip/original.jpg")]


def test_a_photo_replaced_since_its_scan_gets_no_verdict_under_its_old_hash(tmp_path: Path, settings_for) -> None:
    """Pixels read for a check are the bytes the hash names: a swapped file fails its checks, recording nothing."""
    from sqlalchemy import select

    from db.models import CopyCheck

    album = _album(tmp_path / "album")
    settings = settings_for(embedder="fallback")
    counts = scan_task.fn(str(album), settings)
    with resources_for(settings).sessions() as session:
        photos = queries.photos(session, counts.album_id)
    for p in photos:
        assert embed_task.fn(p.id, str(album), settings).error is None
    old = next(p.sha256 for p in photos if p.rel_path == "chat/copy.jpg")
    _save(album / "chat" / "copy.jpg", scene(9, 200, 150), 70)  # another picture under the copy's name

    found = find_copies(counts.album_id, str(album), "fallback:v1", settings)
    assert found.copies == () and found.failed >= 1
    with resources_for(settings).sessions() as session:
        checks = session.scalars(select(CopyCheck).where((CopyCheck.sha_a == old) | (CopyCheck.sha_b == old))).all()
    assert checks == []  # the next scan files the new content under its own hash and checks it then
