"""Checks every command makes before any flow starts: album, output folder, device, checkpoint, settings.

Each check raises :class:`UsageError` with one line naming the bad value and what to do; the CLI
prints it and exits 2. Nothing here imports torch or Prefect (except to ask CUDA, and only when
an NVIDIA driver is present), so a mistake is reported in the time it takes to start Python.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from db.engine import sqlite_file
from flows.album_config import scan_settings
from flows.settings import DeviceChoice, Settings
from pipeline.scan import ScanSettings, candidate_files
from ttsr_core.config import AUTHORS_FIRST_KEY, CHECKPOINT_FORMAT

_NVIDIA_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version")
_LOSSLESS = {"png", "tiff", "tif", "bmp"}
_MB = 1024 * 1024
# What the workspace needs free before a run: Prefect's own SQLite database (a few MB on its first
# start, growing with each run's logs and states), ours, WAL files and the FAISS files, with margin.
# Below it, Prefect's server fails to start ("database or disk is full") and Prefect waits for it.
WORKSPACE_MIN_FREE = 64 * _MB


class UsageError(ValueError):
    """A mistake in what the user asked for: one line, exit status 2."""


class NoPhotosError(ValueError):
    """The album holds no photo the scan would read: exit status 1 (nothing was wrong with the command)."""


def shown(path: object) -> str:
    """A path or name as it may be printed: control characters escaped, never sent to the terminal raw."""
    text = str(path)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def check_album(album: str | os.PathLike[str]) -> Path:
    root = Path(album).expanduser()
    if not root.exists():
        raise UsageError(f"album not found: {shown(root)} (give the folder that holds the photos)")
    if not root.is_dir():
        raise UsageError(f"album is not a folder: {shown(root)} (for one photo use `refsr sr`)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UsageError(f"album folder is not readable: {shown(root)} (check its permissions)")
    return root.resolve()


def album_files(root: Path, scan: ScanSettings) -> list[tuple[str, Path]]:
    """The files a scan would consider; NoPhotosError when there is none."""
    found = candidate_files(root, scan)
    if not found:
        kinds = ", ".join(sorted(scan.extensions))
        raise NoPhotosError(f"no photos found in {shown(root)} (looked for {kinds}; hidden files and folders "
                            f"named {', '.join(scan.exclude)} are skipped)")
    return found


def check_device(choice: DeviceChoice) -> None:
    if choice is not DeviceChoice.CUDA:
        return
    if not any(os.path.exists(node) for node in _NVIDIA_NODES):
        raise UsageError("--device cuda: this machine has no NVIDIA driver or GPU; use --device cpu (or auto)")
    import torch  # only with a driver present: the one way to know whether CUDA really works

    if not torch.cuda.is_available():
        raise UsageError("--device cuda: the NVIDIA driver is present but torch cannot use CUDA "
                         f"(torch {torch.__version__}); use --device cpu (or auto)")


def check_model(settings: Settings) -> Path:
    """The checkpoint exists, is readable and has a TTSR layout (ours or the authors'), read from its header."""
    given = settings.model_path
    if given.exists() and not given.is_file():
        kind = "a folder" if given.is_dir() else "not a regular file (a device, a FIFO?)"
        raise UsageError(f"TTSR checkpoint is {kind}: {shown(given)}; pass a .safetensors or .pt file with --model")
    try:
        path = settings.check_model()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not os.access(path, os.R_OK):
        raise UsageError(f"TTSR checkpoint is not readable: {shown(path)} (check its permissions)")
    if path.suffix == ".safetensors":
        keys, meta = _safetensors_header(path)
        if meta.get("format") != CHECKPOINT_FORMAT and AUTHORS_FIRST_KEY not in keys:
            raise UsageError(f"not a TTSR checkpoint: {shown(path)} holds tensors of another model "
                             "(neither refsr's format nor the authors' TTSR layout); pass a TTSR checkpoint "
                             "with --model")
    elif path.suffix in (".pt", ".pth"):
        with open(path, "rb") as f:
            magic = f.read(4)
        # torch.save writes a zip archive (or, before torch 1.6, a pickle stream starting with PROTO).
        if magic != b"PK\x03\x04" and magic[:1] != b"\x80":
            raise UsageError(f"not a torch checkpoint: {shown(path)} is neither a zip archive nor a pickle stream; "
                             "pass a TTSR checkpoint with --model")
    else:
        raise UsageError(f"unknown checkpoint type {path.suffix!r}: {shown(path)}; use a .safetensors or .pt file")
    return path


def _safetensors_header(path: Path) -> tuple[set[str], dict[str, str]]:
    bad = f"not a readable safetensors checkpoint: {shown(path)}"
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise UsageError(f"{bad} (the file is too short); pass a TTSR checkpoint with --model")
            (length,) = struct.unpack("<Q", raw)
            if length > 100 * _MB or length > path.stat().st_size:
                raise UsageError(f"{bad} (no safetensors header); pass a TTSR checkpoint with --model")
            header = json.loads(f.read(length))
    except (OSError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"{bad} ({type(exc).__name__}); pass a TTSR checkpoint with --model") from None
    if not isinstance(header, dict):
        raise UsageError(f"{bad} (malformed header); pass a TTSR checkpoint with --model")
    meta = header.pop("__metadata__", None) or {}
    need = 8 + length + _tensor_bytes(header)
    if need > path.stat().st_size:
        # A copy cut short (an interrupted download) loads only after Prefect has started: say it now.
        raise UsageError(f"{bad} (truncated: {path.stat().st_size} of {need} bytes); copy the checkpoint again")
    return set(header), meta if isinstance(meta, dict) else {}


def _tensor_bytes(header: dict[str, object]) -> int:
    """Bytes of tensor data the header promises: the end of the furthest `data_offsets`."""
    ends = [entry["data_offsets"][1] for entry in header.values()
            if isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
            and isinstance(entry["data_offsets"][1], int)]
    return max(ends, default=0)


def check_output_folder(out: Path, inputs: Iterable[Path] = (), planned_bytes: int = 0) -> Path:
    """The output folder can be created and written, is not an input photo, and has room for the planned outputs."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder is a file: {shown(out)} (give a folder with --out)")
    existing = _existing_ancestor(out)
    if not existing.is_dir():
        raise UsageError(f"output folder cannot be created: {shown(existing)} is a file, not a folder")
    resolved_inputs = {Path(p).resolve() for p in inputs}
    if out in resolved_inputs:
        raise UsageError(f"output folder is an input: {shown(out)}")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".refsr-write-check-"):
            pass
    except OSError as exc:
        # A file system that takes no new files at all (/proc) answers "No such file or directory"
        # for a folder that plainly exists: say what it means instead.
        reason = "it accepts no new files" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
        where = (f"output folder is not writable: {shown(out)}" if existing == out else
                 f"output folder {shown(out)} cannot be created: {shown(existing)} is not writable")
        raise UsageError(f"{where} ({reason}); choose another with --out") from None
    check_room(existing, planned_bytes)
    return out


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def check_room(out: Path, planned_bytes: int) -> None:
    """The file system that will hold `out` (or its nearest existing parent) has room for `planned_bytes`."""
    if not planned_bytes:
        return
    existing = _existing_ancestor(Path(out).expanduser().resolve())
    free = shutil.disk_usage(existing).free
    if free < planned_bytes:
        raise UsageError(f"not enough space for the outputs in {shown(existing)}: about {planned_bytes / _MB:.0f} MB "
                         f"planned, {free / _MB:.0f} MB free; free some space or choose another --out")


def planned_bytes(sizes: Iterable[tuple[int, int]], outscale: float, output_format: str | None) -> int:
    """A generous estimate of what the outputs of these (width, height) targets take on disk.

    Lossless formats are counted at 3 bytes per output pixel (PNG of a photo rarely beats 2), JPEG
    and WebP at 0.5 (an upscaled photo at quality 95 is well under that).
    """
    per_pixel = 3.0 if (output_format or "").lower() in _LOSSLESS else 0.5
    return int(sum(w * h * outscale * outscale * per_pixel for w, h in sizes))


@dataclass(frozen=True)
class AlbumCheck:
    """What the album commands learn before they start: the album, its scan settings, its files."""

    root: Path
    scan: ScanSettings
    files: tuple[tuple[str, Path], ...]


def check_workspace_room(settings: Settings, need: int = WORKSPACE_MIN_FREE) -> None:
    """REFSR_HOME, Prefect's home and a SQLite database's folder have room for a run's bookkeeping."""
    places = [settings.home, Path(os.environ.get("PREFECT_HOME") or settings.home / "prefect")]
    if (db_file := sqlite_file(settings.database_url)) is not None:
        places.append(db_file.parent)
    for place in dict.fromkeys(_existing_ancestor(Path(p).expanduser().resolve()) for p in places):
        free = shutil.disk_usage(place).free
        if free < need:
            raise UsageError(f"not enough space in the workspace {shown(place)}: {free / _MB:.0f} MB free, a run "
                             f"needs about {need / _MB:.0f} MB for its databases; free some space or set "
                             "REFSR_HOME (--home) to a folder on another disk")


def check_album_command(settings: Settings, album: str | os.PathLike[str]) -> AlbumCheck:
    """`refsr index` and `refsr enhance`: the album and its refsr.toml, and that it holds photos."""
    check_workspace_room(settings)
    root = check_album(album)
    try:
        scan = scan_settings(settings, root)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return AlbumCheck(root, scan, tuple(album_files(root, scan)))


def check_enhance_command(settings: Settings, album: str | os.PathLike[str]) -> AlbumCheck:
    """`refsr enhance` and `refsr serve`: the album checks plus device, checkpoint and output folder."""
    check_device(settings.device)
    check_model(settings)
    found = check_album_command(settings, album)
    out = settings.output_dir(found.root).resolve()
    if any(path.resolve() == out for _, path in found.files):
        raise UsageError(f"--out is a photo of the album: {shown(out)}")
    check_output_folder(out, [found.root])
    return found


def target_sizes(found: AlbumCheck, known: dict[str, tuple[int, int, int | None, int | None]]) -> list[tuple[int, int]]:
    """(width, height) of the photos that will be targets: the database's record where the file is unchanged,
    else the image header (no pixels decoded); roles by this run's rule."""
    from pipeline import images
    from pipeline.scan import roles_for
    from pipeline.vocabulary import PhotoRole

    dims: dict[str, tuple[int, int]] = {}
    for rel, path in found.files:
        try:
            st = path.stat()
            record = known.get(rel)
            if record and record[:2] == (st.st_size, st.st_mtime_ns) and record[2] and record[3]:
                dims[rel] = (int(record[2]), int(record[3]))
            else:
                header = images.read_header(path, max_pixels=found.scan.max_pixels)
                dims[rel] = (header.width, header.height)
        except (OSError, images.UnreadableImageError):
            continue  # the scan reports it
    roles = roles_for(dims, found.scan)
    return [dims[rel] for rel, role in roles.items() if role is PhotoRole.target]
