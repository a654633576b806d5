"""Pixels that are the ones their hash names: one read both hashes and decodes the same bytes."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from pipeline import images


class PhotoChangedError(ValueError):
    """The file under a photo's name holds other bytes than the hash it is filed under (replaced mid-run)."""

    def __init__(self, path: images.PathLike, expected: str, found: str) -> None:
        self.path, self.expected, self.found = Path(path), expected, found
        super().__init__(f"{str(self.path)!r} changed since it was scanned (sha256 {expected[:12]}…, now "
                         f"{found[:12]}…); skipped this time, the next run takes its new content")


def read_verified(path: images.PathLike, expected_sha256: str) -> bytes:
    """The file's bytes, read once, if their SHA-256 is ``expected_sha256``; PhotoChangedError otherwise.

    Hashing the bytes that are then decoded (instead of hashing the path and decoding it again) is
    what keeps a vector or an output from being filed under another picture's hash when the file is
    replaced between the scan and this read. FileNotFoundError propagates as it is.
    """
    # O_NONBLOCK: a FIFO put in the photo's place must not wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise images.UnreadableImageError(path, str(OSError(errno.EINVAL, "not a regular file")))
    with open(fd, "rb", buffering=0) as handle:
        data = handle.read()
    found = hashlib.sha256(data).hexdigest()
    if found != expected_sha256:
        raise PhotoChangedError(path, expected_sha256, found)
    return data


def load_verified(path: images.PathLike, expected_sha256: str | None,
                  max_pixels: int | None = images.DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, images.ImageMeta]:
    """`images.load_rgb` of exactly the bytes hashed as ``expected_sha256`` (None: no hash to hold them to)."""
    if expected_sha256 is None:
        return images.load_rgb(path, max_pixels=max_pixels)
    return images.load_rgb(path, max_pixels=max_pixels, data=read_verified(path, expected_sha256))
