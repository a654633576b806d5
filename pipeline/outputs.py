"""Folders refsr writes into: a marker that keeps scans out, writes kept inside the folder, a ledger of them."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Hidden, so a scan never lists it as a photo; its presence makes every scan skip the folder.
MARKER = ".refsr-output"
_HEADER = (
    "# Written by refsr-album: this folder holds its outputs (or a gallery), so album scans skip it.\n"
    "# Each line below is a file refsr wrote here (JSON string, relative to this folder); refsr\n"
    "# replaces only those, never a file of yours.\n"
)


class UnsafeOutputError(ValueError):
    """A write that would leave the output folder or replace a file this project did not write."""


def mark_output_folder(root: PathLike) -> Path:
    """Create `root` if needed and put the marker in it; returns the marker's path."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.exists():
        # O_APPEND without O_EXCL: two processes marking one folder both succeed; a doubled
        # header is harmless (comment lines).
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if os.fstat(fd).st_size == 0:
                os.write(fd, _HEADER.encode())
        finally:
            os.close(fd)
    return marker


def is_output_folder(directory: PathLike) -> bool:
    """Whether `directory` carries the marker (a regular file, not whatever else a name may be)."""
    try:
        return stat.S_ISREG(os.lstat(Path(directory) / MARKER).st_mode)
    except OSError:
        return False


def resolve_inside(root: PathLike, path: PathLike) -> Path:
    """`path` with every symlink resolved; UnsafeOutputError unless it stays inside the resolved `root`."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(real_root):
        raise UnsafeOutputError(
            f"refusing to write {str(path)!r}: it resolves to {str(real)!r}, outside the output folder "
            f"{str(real_root)!r} (a symlinked folder?)"
        )
    return real


class _Ledger:
    """One folder's ledger names as read so far: each call reads only the bytes appended since.

    A redo over a folder of N outputs would otherwise parse the whole N-line ledger once per output.
    A file that shrank or was replaced (another inode) is read again from the start.
    """

    def __init__(self) -> None:
        self.inode: tuple[int, int] | None = None
        self.offset = 0
        self.names: set[str] = set()


_LEDGERS: dict[Path, _Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


_UNWRITTEN = "# unwritten "  # a claimed name whose write failed (release_output)


def _ledger_names(real_root: Path) -> set[str]:
    path = real_root / MARKER
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.setdefault(real_root, _Ledger())
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_dev, st.st_ino) != ledger.inode or st.st_size < ledger.offset:
                    ledger.inode, ledger.offset, ledger.names = (st.st_dev, st.st_ino), 0, set()
                f.seek(ledger.offset)
                new = f.read()
        except OSError:
            _LEDGERS.pop(real_root, None)
            return set()
        complete = new.rfind(b"\n") + 1  # a line still being appended (or torn by a crash) waits
        for line in new[:complete].decode("utf-8", errors="replace").splitlines():
            unwritten = line.startswith(_UNWRITTEN)
            if line and (unwritten or not line.startswith("#")):
                try:
                    name = json.loads(line[len(_UNWRITTEN):] if unwritten else line)
                except ValueError:
                    continue  # a torn line after a crash: that write never completed
                if unwritten:
                    ledger.names.discard(name)
                else:
                    ledger.names.add(name)
        ledger.offset += complete
        return set(ledger.names)


def claim_output(root: PathLike, path: PathLike, *, recorded: Callable[[Path], bool] = lambda _p: False) -> Path:
    """Check that `path` may be written and note it in the folder's ledger first; returns its resolved path.

    Refused (UnsafeOutputError), by name: a path that resolves outside `root`, anything there that is
    not a regular file, and an existing file that neither the ledger nor `recorded(resolved path)`
    (the database's record of outputs) says this project wrote. The ledger line goes in before the
    file is written, so a process killed between writing and recording still owns its file.
    """
    real_root = Path(os.path.realpath(root))
    mark_output_folder(real_root)
    real = resolve_inside(real_root, path)
    rel = real.relative_to(real_root).as_posix()
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeOutputError(
                f"refusing to write {str(path)!r}: something other than a regular file is there (a folder?)"
            )
        if rel in _ledger_names(real_root):
            return real
        if not recorded(real):
            raise UnsafeOutputError(
                f"refusing to replace {str(path)!r}: refsr did not write it; move it away or choose another --out"
            )
    elif rel in _ledger_names(real_root):
        return real  # written before and since deleted: its line is there already
    _append(real_root, json.dumps(rel))
    return real


def release_output(root: PathLike, path: PathLike) -> None:
    """Take back `claim_output`'s ledger line when the write failed and nothing is at `path`.

    The ledger then names only files refsr wrote: a user's file put there later is not refsr's to
    replace. A comment line to earlier releases, which skip it (and keep the claim, as they did).
    """
    real_root = Path(os.path.realpath(root))
    real = resolve_inside(real_root, path)
    if not os.path.lexists(real) and (real_root / MARKER).is_file():
        _append(real_root, _UNWRITTEN + json.dumps(real.relative_to(real_root).as_posix()))


def _append(real_root: Path, line: str) -> None:
    # One short O_APPEND write per line: concurrent writers never interleave inside a line.
    fd = os.open(real_root / MARKER, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        # After a crash mid-line the file ends without a newline: start a fresh line, or the torn
        # fragment would swallow this name too.
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (("\n" if torn else "") + line + "\n").encode())
    finally:
        os.close(fd)
