"""The gallery's assets folder: content-keyed thumbnails and bicubic upscales, reused while sources are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.gallery.cards import THUMB_FORMATS, GallerySettings
from pipeline.images import PathLike, UnreadableImageError, load_rgb, save_atomic, shrink
from ttsr_core.arrays import resize_bicubic
from ttsr_core.config import SCALE

logger = logging.getLogger(__name__)

ASSETS_DIR = "assets"
# Bump when anything derived from the sources changes, so old cached assets are not reused.
CACHE_VERSION = 1
_HEX_NAME_RE = re.compile(r"[0-9a-f]{24}(\.[a-z]+)?")


def file_signature(path: Path) -> str:
    """Content identity without reading the file: resolved path, size and mtime (ns)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def digest(*parts: object) -> str:
    """A cache file name: 24 hex of the hash of everything the cached content depends on."""
    text = json.dumps([CACHE_VERSION, *[str(p) for p in parts]], ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def ensure_bicubic(
    target: PathLike, cache_dir: PathLike, size: tuple[int, int] | None = None, quality: int = 95
) -> Path:
    """Write (once, cached by the target's path/size/mtime) the bicubic upscale of ``target``.

    ``size`` is (width, height) of the enhanced output, so the two compare pixel for pixel;
    None → ×4. Written as JPEG q95 4:4:4 into ``cache_dir``; returns its path.
    """
    target = Path(target)
    signature = file_signature(target)
    if size is not None:
        width, height = size
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be a positive (width, height), got {size!r}")
    name = digest("bicubic", signature, size, quality) + ".jpg"
    out = Path(cache_dir) / name
    if out.is_file():
        return out
    rgb, _meta = load_rgb(target)
    width, height = size if size is not None else (rgb.shape[1] * SCALE, rgb.shape[0] * SCALE)
    return save_atomic(out, resize_bicubic(rgb, width, height), format="JPEG", quality=quality)


class Sources:
    """Decodes each source image at most once per card, remembering why one could not be read."""

    def __init__(self) -> None:
        self._images: dict[Path, np.ndarray | None] = {}
        self.problems: dict[Path, str] = {}

    def get(self, path: Path | None) -> np.ndarray | None:
        if path is None:
            return None
        if path not in self._images:
            try:
                self._images[path] = load_rgb(path)[0]
            except FileNotFoundError:
                self._images[path] = None
                self.problems[path] = "file not found"
            except (OSError, UnreadableImageError) as exc:
                self._images[path] = None
                self.problems[path] = str(exc)
                logger.warning("gallery: cannot read %s: %s", path, exc)
        return self._images[path]

    def peek(self, path: Path | None) -> np.ndarray | None:
        """The image if it was already decoded; never reads the file."""
        return self._images.get(path) if path is not None else None


@dataclass(frozen=True)
class Picture:
    """A generated image on the page: its path relative to the gallery folder and its pixel size."""

    rel: str
    width: int
    height: int


class Assets:
    """The gallery's assets folder: content-keyed files, and which ones this render used."""

    def __init__(self, out_dir: Path, settings: GallerySettings) -> None:
        self.out_dir = out_dir
        self.root = out_dir / ASSETS_DIR
        self.settings = settings
        self.used: set[Path] = set()

    def picture(self, path: Path) -> Picture:
        self.used.add(path)
        with Image.open(path) as im:
            width, height = im.size
        return Picture(path.relative_to(self.out_dir).as_posix(), width, height)

    def thumb(self, source: Path, sources: Sources) -> Picture | None:
        """A cached thumbnail of a source file, keyed by its signature; None when unreadable."""
        try:
            signature = file_signature(source)
        except OSError as exc:
            sources.problems.setdefault(
                source, "file not found" if isinstance(exc, FileNotFoundError) else str(exc)
            )
            return None
        s = self.settings
        out = (
            self.root
            / "thumbs"
            / (
                digest("thumb", signature, s.thumb_side, s.thumb_format, s.thumb_quality)
                + THUMB_FORMATS[s.thumb_format]
            )
        )
        if not out.is_file():
            rgb = sources.get(source)
            if rgb is None:
                return None
            save_atomic(out, shrink(rgb, s.thumb_side), format=s.thumb_format, quality=s.thumb_quality)
        return self.picture(out)

    def prune(self) -> None:
        """Remove cached thumbnails/cards that this render did not use (only our own hex-named entries)."""
        for sub in ("thumbs", "cards", "bicubic"):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry in self.used or not _HEX_NAME_RE.fullmatch(entry.name):
                    continue
                if entry.is_dir():
                    for child in entry.iterdir():
                        child.unlink(missing_ok=True)
                    entry.rmdir()
                else:
                    entry.unlink(missing_ok=True)
