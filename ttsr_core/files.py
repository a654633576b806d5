"""Durable file writes and content hashes: what checkpoints need, shared by the rooms above."""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, write: Callable[[Path], object], *, mode: int | None = None) -> Path:
    """Write ``path`` so that readers see the old file or the whole new one, even after a crash.

    ``write(tmp)`` fills a hidden temp file beside ``path`` (same directory, so the rename is atomic;
    hidden, so an album scan never takes a crash's leftover for a photo). The file is fsynced, given
    ``mode`` (default: the mode of the file it replaces, else 0o644, not mkstemp's 0o600), renamed over
    ``path``, and the directory is fsynced so that the rename itself survives a power cut. Returns ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode is None:
            mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; directories cannot be opened (nor need to be) on Windows."""
    if os.name != "posix":
        return
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a regular file's bytes, streamed in ``chunk``-byte reads (constant memory).

    Anything else (FIFO, socket, device, directory) is an OSError, raised without blocking.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(fd, "rb", buffering=0) as handle:
        while n := handle.readinto(view):
            digest.update(view[:n])
    return digest.hexdigest()
