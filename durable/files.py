"""Durable file writes and content hashes: what checkpoints need, shared by the rooms above."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable

PathLike = str | os.PathLike[str]
_LONG_NAME = 200  # bytes of a file name beyond which atomic_write's temp file takes a hashed stand-in


def atomic_write(path: PathLike, write: Callable[[Path], object], *, mode: int | None = None) -> Path:
    """Write ``path`` so that readers see the old file or the whole new one, even after a crash.

    ``write(tmp)`` fills a hidden temp file beside ``path`` (same directory, so the rename is atomic;
    hidden, so an album scan never takes a crash's leftover for a photo). The file is fsynced, given
    ``mode`` (default: the mode of the file it replaces, else 0o666 less the umask as open() gives, not
    mkstemp's 0o600), renamed over ``path``, and the directory is fsynced so that the rename itself
    survives a power cut; :func:`remove_stale_temps` clears what a killed process left. Returns ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temp name adds 14 bytes; a long name (up to the file system's 255) gets a short stand-in.
    stem = target.name if len(os.fsencode(target.name)) <= _LONG_NAME else hashlib.sha256(
        os.fsencode(target.name)).hexdigest()[:16]
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode is None:
            mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


# mkstemp's names: ".<target name>.<8 random characters>.tmp" (see atomic_write).
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temps(directory: PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Delete the temp files that killed ``atomic_write`` calls left under ``directory``; returns them.

    Only names that atomic_write makes, and only when untouched for ``older_than_s`` seconds: a
    live write holds its temp file for the seconds an encode and an fsync take, so an hour-old one
    belongs to a process that died (SIGKILL or a power cut skip atomic_write's own clean-up).
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not _TEMP_NAME.fullmatch(name):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue  # another process cleaned it first
    return removed


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread) where Linux allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


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
