"""Incremental album scan: find photos, hash what changed, classify targets and references (no database)."""

from __future__ import annotations

import enum
import logging
import os
import stat as stat_mode
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline import images, outputs
from pipeline.roles import RelativeRoles, long_side
from pipeline.vocabulary import PhotoRole
from durable import files

logger = logging.getLogger(__name__)

_BASE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp")
_HEIF_EXTENSIONS = ("heic", "heif")
# Photo formats a scan names when it skips them, so an album of GIFs or iPhone HEICs is not silently empty.
_OTHER_PHOTO_FORMATS = frozenset({"gif", "heic", "heif", "avif", "jxl", "jp2", "dng", "cr2", "cr3", "nef", "arw",
                                  "orf", "rw2", "raf", "psd"})
# Below this long side there is nothing to enhance or to lend (a tracking pixel, an icon).
MIN_PHOTO_SIDE = 8


def default_extensions() -> frozenset[str]:
    """Lower-case extensions without the dot; HEIC/HEIF only when pillow_heif can open them."""
    extra = _HEIF_EXTENSIONS if images.heif_available() else ()
    return frozenset(_BASE_EXTENSIONS + extra)


def _positive_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ScanSettings:
    """How one scan walks the album and splits photos into targets and references."""

    min_ref_side: int = 1600  # long side ≥ this → reference candidate
    max_target_side: int = 1024  # long side ≤ this → enhancement target
    # Set: roles come from the relative rule (pipeline.roles) and the two thresholds are unused.
    ref_ratio: float | None = None
    extensions: frozenset[str] = field(default_factory=default_extensions)
    follow_symlinks: bool = False
    max_pixels: int | None = images.DEFAULT_MAX_PIXELS
    # Directory names skipped at any depth; our own output folder by default so outputs never
    # become inputs of the next run.
    exclude: tuple[str, ...] = ("enhanced",)
    skip_hidden: bool = True  # dot-dirs and dot-files (".thumbnails", macOS "._IMG.jpg" forks)
    # Decode-check new/changed files so a truncated JPEG (intact header) is caught at scan time.
    verify: bool = True
    # Re-read files the database knows as unreadable even if size/mtime are the same (e.g. after
    # raising max_pixels). Off by default so an unchanged album reads nothing.
    recheck_unreadable: bool = False

    def __post_init__(self) -> None:
        _positive_int("ScanSettings", "min_ref_side", self.min_ref_side)
        _positive_int("ScanSettings", "max_target_side", self.max_target_side)
        if self.max_target_side >= self.min_ref_side:
            raise ValueError(
                "ScanSettings.max_target_side must be below min_ref_side so no photo is both, got "
                f"max_target_side={self.max_target_side!r}, min_ref_side={self.min_ref_side!r}"
            )
        if self.ref_ratio is not None:
            RelativeRoles(self.ref_ratio)  # validates
        if self.max_pixels is not None:
            _positive_int("ScanSettings", "max_pixels", self.max_pixels)
        if isinstance(self.extensions, str) or not isinstance(self.extensions, Iterable):
            raise TypeError(f"ScanSettings.extensions must be a collection of str, got {self.extensions!r}")
        normalised = set()
        for ext in self.extensions:
            # Matching uses the last suffix only, so "tar.gz"-style entries could never match.
            bare = ext.strip().lstrip(".") if isinstance(ext, str) else ""
            if not bare or "." in bare or "/" in bare:
                raise ValueError(f"ScanSettings.extensions has an invalid extension {ext!r}")
            normalised.add(bare.lower())
        if not normalised:
            raise ValueError(f"ScanSettings.extensions must not be empty, got {self.extensions!r}")
        # Frozen: normalise through object.__setattr__ so "JPG", ".jpg" and "jpg" are one setting.
        object.__setattr__(self, "extensions", frozenset(normalised))
        if isinstance(self.exclude, str) or not isinstance(self.exclude, Iterable):
            raise TypeError(
                f"ScanSettings.exclude must be a collection of directory names, got {self.exclude!r}"
            )
        exclude = tuple(self.exclude)
        for name in exclude:
            if not isinstance(name, str) or not name or "/" in name or os.sep in name:
                raise ValueError(f"ScanSettings.exclude entries must be bare directory names, got {name!r}")
        object.__setattr__(self, "exclude", exclude)
        for flag in ("follow_symlinks", "skip_hidden", "verify", "recheck_unreadable"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"ScanSettings.{flag} must be a bool, got {getattr(self, flag)!r}")


class ScanStatus(enum.Enum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    UNREADABLE = "unreadable"
    GONE = "gone"


def classify(width: int, height: int, settings: ScanSettings) -> PhotoRole:
    """Role by the long side of the displayed (orientation-applied) size; thresholds inclusive."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    long_side = max(width, height)
    if long_side >= settings.min_ref_side:
        return PhotoRole.reference
    if long_side <= settings.max_target_side:
        return PhotoRole.target
    return PhotoRole.neither


@dataclass(frozen=True)
class KnownPhoto:
    """What the caller (the database) recorded about a photo at the previous scan."""

    rel_path: str  # posix, relative to the album root
    size_bytes: int
    mtime_ns: int
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    status: ScanStatus = ScanStatus.UNCHANGED

    def __post_init__(self) -> None:
        if not isinstance(self.status, ScanStatus):
            raise TypeError(f"KnownPhoto.status must be a ScanStatus, got {self.status!r}")


@dataclass(frozen=True)
class ScanEntry:
    """One file's verdict; `error` is a one-line reason when status is UNREADABLE."""

    rel_path: str  # posix, relative to the album root: the key callers store
    path: Path  # absolute
    status: ScanStatus
    sha256: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    width: int | None = None  # displayed size (EXIF orientation applied)
    height: int | None = None
    format: str | None = None
    role: PhotoRole | None = None
    error: str | None = None
    # UNCHANGED content but new size/mtime (touched, copied back): the caller should store the
    # new stat so the next scan takes the fast path again.
    stat_changed: bool = False


@dataclass(frozen=True)
class ScanResult:
    root: Path
    entries: tuple[ScanEntry, ...]
    # (extension, count) of photo files this scan skipped for their format (GIF, HEIC without pillow-heif…)
    skipped_formats: tuple[tuple[str, int], ...] = ()

    def summary(self) -> dict[ScanStatus, int]:
        """Count per status, every status present (zeros included) so callers can index freely."""
        counts = {status: 0 for status in ScanStatus}
        for entry in self.entries:
            counts[entry.status] += 1
        return counts

    def with_status(self, status: ScanStatus) -> tuple[ScanEntry, ...]:
        return tuple(entry for entry in self.entries if entry.status is status)


def _iter_files(root: Path, settings: ScanSettings,
                skipped: dict[str, int] | None = None) -> Iterator[tuple[str, Path]]:
    """(posix rel_path, absolute path) for candidate files; the caller sorts. Photo files of a format
    the settings do not read are counted in `skipped` by extension."""
    excluded = set(settings.exclude)
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=settings.follow_symlinks):
        if settings.follow_symlinks:
            # A symlink loop (a → ..) would otherwise be walked forever.
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
        # A folder carrying refsr's output marker holds outputs or a gallery, wherever it lies and
        # whatever its name: never photos of the album.
        dirnames[:] = sorted(
            name
            for name in dirnames
            if name not in excluded and not (settings.skip_hidden and name.startswith("."))
            and not outputs.is_output_folder(Path(dirpath) / name)
        )
        for name in sorted(filenames):
            if settings.skip_hidden and name.startswith("."):
                continue
            suffix = name.rpartition(".")[2].lower() if "." in name else ""
            if suffix not in settings.extensions:
                if skipped is not None and suffix in _OTHER_PHOTO_FORMATS:
                    skipped[suffix] = skipped.get(suffix, 0) + 1
                continue
            path = Path(dirpath) / name
            if not settings.follow_symlinks and path.is_symlink():
                continue
            yield path.relative_to(root).as_posix(), path


def _utf8_name(rel: str) -> str:
    """``rel`` itself, or for a name with bytes that are not UTF-8 (surrogates after os.walk) the
    bytes escaped as ``\\xff``: one stable, printable, storable name per file."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _unreadable(rel: str, path: Path, reason: str, **stat: object) -> ScanEntry:
    logger.warning("unreadable photo %s: %s", rel, reason)
    return ScanEntry(
        rel_path=rel, path=path, status=ScanStatus.UNREADABLE, error=reason, **stat  # type: ignore[arg-type]
    )


def _too_small(width: int | None, height: int | None) -> str | None:
    """The reason a photo of this size is listed rather than used, or None."""
    if width is not None and height is not None and max(width, height) < MIN_PHOTO_SIDE:
        return f"too small: {width}×{height} px (a photo needs {MIN_PHOTO_SIDE} px or more on its long side)"
    return None


def _file_kind(mode: int) -> str:
    for test, name in ((stat_mode.S_ISFIFO, "a FIFO"), (stat_mode.S_ISSOCK, "a socket"),
                       (stat_mode.S_ISCHR, "a character device"), (stat_mode.S_ISBLK, "a block device"),
                       (stat_mode.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a plain file"


def _scan_one(rel: str, path: Path, known: KnownPhoto | None, settings: ScanSettings) -> ScanEntry | None:
    """Verdict for one file; None when it vanished between listing and stat."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unreadable(rel, path, f"cannot stat: {exc.strerror or exc}")
    if not stat_mode.S_ISREG(st.st_mode):
        # Opening a FIFO blocks until a writer comes, a device may never end: read only regular files.
        return _unreadable(rel, path, f"not a regular file ({_file_kind(st.st_mode)})")
    stat = {"size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    same_stat = known is not None and known.size_bytes == st.st_size and known.mtime_ns == st.st_mtime_ns

    if known is not None and same_stat:
        if known.status is ScanStatus.UNREADABLE and not settings.recheck_unreadable:
            return ScanEntry(
                rel_path=rel, path=path, status=ScanStatus.UNREADABLE, sha256=known.sha256,
                error="unreadable at the previous scan and unchanged since", **stat,
            )
        if (
            known.status not in {ScanStatus.UNREADABLE, ScanStatus.GONE}
            and known.width is not None
            and known.height is not None
            and _too_small(known.width, known.height) is None
        ):
            # The fast path: no open(), no hashing. Role uses this run's settings, so changing a
            # threshold reclassifies the album without reading it.
            return ScanEntry(
                rel_path=rel, path=path, status=ScanStatus.UNCHANGED, sha256=known.sha256,
                width=known.width, height=known.height, format=known.format,
                role=classify(known.width, known.height, settings), **stat,
            )

    try:
        digest = files.sha256_file(path)
    except OSError as exc:
        return _unreadable(rel, path, f"cannot read: {exc.strerror or exc}", **stat)
    try:
        header = images.read_header(path, max_pixels=settings.max_pixels)
        if settings.verify:
            images.verify_decodable(path, max_pixels=settings.max_pixels)
    except images.UnreadableImageError as exc:
        return _unreadable(rel, path, exc.reason, sha256=digest, **stat)
    except OSError as exc:
        return _unreadable(rel, path, f"cannot read: {exc.strerror or exc}", sha256=digest, **stat)
    if (small := _too_small(header.width, header.height)) is not None:
        return _unreadable(rel, path, small, sha256=digest, **stat)

    if known is None:
        status = ScanStatus.NEW
    elif known.sha256 == digest and known.status not in {ScanStatus.UNREADABLE, ScanStatus.GONE}:
        status = ScanStatus.UNCHANGED
    else:
        # Includes a formerly unreadable or gone path that now decodes: it still needs processing.
        status = ScanStatus.CHANGED
    return ScanEntry(
        rel_path=rel, path=path, status=status, sha256=digest,
        width=header.width, height=header.height, format=header.format,
        role=classify(header.width, header.height, settings),
        stat_changed=status is ScanStatus.UNCHANGED and not same_stat,
        **stat,
    )


def scan_album(
    root: str | os.PathLike[str],
    known: Mapping[str, KnownPhoto],
    settings: ScanSettings,
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Walk the album and say, per photo, what changed since `known` (keyed by posix rel_path).

    Files whose size and mtime_ns match `known` are reported UNCHANGED without being opened or
    hashed; everything else is hashed, header-read and (with settings.verify) decode-checked.
    Unreadable files become UNREADABLE entries and the scan goes on. A known path that is not among
    this scan's candidates becomes GONE: deleted, but also newly excluded, hidden, symlinked or of an
    extension these settings no longer accept, so callers should not purge history on GONE alone. `progress(done, total)` is called once before and after each file.
    """
    if not isinstance(settings, ScanSettings):
        raise TypeError(f"settings must be ScanSettings, got {type(settings).__name__}")
    root_path = Path(root).absolute()
    if not root_path.is_dir():
        raise ValueError(f"album root is not a directory: {str(root_path)!r}")
    for key, photo in known.items():
        if not isinstance(photo, KnownPhoto) or photo.rel_path != key:
            raise ValueError(f"known[{key!r}] must be a KnownPhoto with that rel_path, got {photo!r}")

    # Sorted by rel_path as a whole (os.walk lists a directory's files before its subdirectories),
    # so entries and progress follow one order a person can predict.
    skipped: dict[str, int] = {}
    files = sorted(_iter_files(root_path, settings, skipped))
    total = len(files)
    if progress is not None:
        progress(0, total)
    entries: list[ScanEntry] = []
    present: set[str] = set()
    for done, (rel, path) in enumerate(files, start=1):
        if (shown := _utf8_name(rel)) != rel:
            # No database stores a name that is not text; listed by its bytes, escaped, and left alone.
            rel, entry = shown, _unreadable(shown, path, "its name is not valid UTF-8; rename it to include it")
        else:
            entry = _scan_one(rel, path, known.get(rel), settings)
        if entry is not None:
            entries.append(entry)
            present.add(rel)
        if progress is not None:
            progress(done, total)
    for rel in sorted(set(known) - present):
        photo = known[rel]
        entries.append(
            ScanEntry(rel_path=rel, path=root_path / rel, status=ScanStatus.GONE, sha256=photo.sha256)
        )

    if settings.ref_ratio is not None:
        entries = _relative_roles(entries, settings)
    result = ScanResult(root=root_path, entries=tuple(entries), skipped_formats=tuple(sorted(skipped.items())))
    logger.info(
        "scanned %s: %s", root_path, ", ".join(f"{s.value}={n}" for s, n in result.summary().items())
    )
    return result


def candidate_files(root: str | os.PathLike[str], settings: ScanSettings) -> list[tuple[str, Path]]:
    """(posix rel_path, absolute path) of every file a scan would consider, sorted; no file is opened."""
    return sorted(_iter_files(Path(root).absolute(), settings))


def roles_for(sizes: Mapping[str, tuple[int, int]], settings: ScanSettings) -> dict[str, PhotoRole]:
    """The role of each photo, given every photo's (width, height): the relative rule when
    ``settings.ref_ratio`` is set (a photo's role depends on the sizes of the others), else the thresholds."""
    if settings.ref_ratio is not None:
        return RelativeRoles(settings.ref_ratio).assign({rel: long_side(*wh) for rel, wh in sizes.items()})
    return {rel: classify(w, h, settings) for rel, (w, h) in sizes.items()}


def _relative_roles(entries: list[ScanEntry], settings: ScanSettings) -> list[ScanEntry]:
    """Roles from the album as a whole, once every entry's size is known."""
    sizes = {e.rel_path: (e.width, e.height) for e in entries if e.role is not None and e.width and e.height}
    roles = roles_for(sizes, settings)
    return [replace(e, role=roles[e.rel_path]) if e.rel_path in roles else e for e in entries]
