"""Folders refsr writes into: a marker that keeps scans out, writes kept inside the folder, a ledger of them."""

from __future__ import annotations

import json
import logging
import os
import stat
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


def _ledger_names(real_root: Path) -> set[str]:
    try:
        text = (real_root / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            try:
                names.add(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash: that write never completed
    return names


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
    # One short O_APPEND write per line: concurrent writers never interleave inside a line.
    fd = os.open(real_root / MARKER, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (json.dumps(rel) + "\n").encode())
    finally:
        os.close(fd)
    return real
