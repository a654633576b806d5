"""Hash what you decode: one read feeds both the hash check and the decoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import images
from pipeline.hashed_read import PhotoChangedError, load_verified, read_verified


def _photo(path: Path, value: int) -> str:
    Image.fromarray(np.full((8, 12, 3), value, np.uint8)).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_pixels_decoded_are_those_of_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    sha = _photo(path, 10)
    rgb, meta = load_verified(path, sha)
    assert rgb.shape == (8, 12, 3) and int(rgb.max()) == 10 and meta.format == "PNG"


def test_a_file_replaced_between_hash_and_read_is_refused_not_decoded(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    sha = _photo(path, 10)
    _photo(path, 200)  # replaced after the scan hashed it
    decoded = []
    monkeypatch.setattr(images, "load_rgb", lambda *a, **k: decoded.append(a))
    with pytest.raises(PhotoChangedError, match="changed since it was scanned") as err:
        load_verified(path, sha)
    assert err.value.expected == sha and not decoded and str(path) in str(err.value)


def test_no_hash_means_a_plain_decode_and_odd_files_stay_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    _photo(path, 10)
    assert load_verified(path, None)[0].shape == (8, 12, 3)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(images.UnreadableImageError, match="empty"):
        load_verified(empty, hashlib.sha256(b"").hexdigest())
    with pytest.raises(images.UnreadableImageError, match="not a regular file"):
        read_verified(tmp_path, "0" * 64)
    with pytest.raises(FileNotFoundError):
        read_verified(tmp_path / "gone.png", "0" * 64)
