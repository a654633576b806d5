"""Static before/after gallery: cached thumbnails, 1:1 crops at the attention peak, heat overlays."""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import html
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw

from pipeline.images import PathLike, UnreadableImageError, load_rgb, read_header, save_atomic

logger = logging.getLogger(__name__)

# TTSR's texture search runs on lv3 features, one position per LR pixel = SCALE×SCALE output pixels.
SCALE = 4
ASSETS_DIR = "assets"
INDEX_NAME = "index.html"
# Bump when anything derived from the sources changes, so old cached assets are not reused.
_CACHE_VERSION = 1
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEX_NAME_RE = re.compile(r"[0-9a-f]{24}(\.[a-z]+)?")
_THUMB_FORMATS = {"JPEG": ".jpg", "WEBP": ".webp"}
# Piecewise-linear approximation of matplotlib's "inferno": dark = low attention, yellow = high.
_INFERNO = (
    (0.0, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)
_ERROR_CHARS = 4000  # a traceback longer than this is cut: the database keeps the whole text


class CardStatus(enum.StrEnum):
    succeeded = "succeeded"
    failed = "failed"


@dataclass(frozen=True)
class GallerySettings:
    """How big the generated images are; every size is in pixels."""

    thumb_side: int = 320  # long side of a thumbnail (never upscaled)
    crop_side: int = 160  # side of a 1:1 crop of the enhanced output
    thumb_format: str = "JPEG"  # or "WEBP"
    thumb_quality: int = 85
    heat_alpha: float = 0.6  # opacity of the heat colours over the greyed target
    prune: bool = True  # delete cached assets that no card of this render uses

    def __post_init__(self) -> None:
        for name in ("thumb_side", "crop_side", "thumb_quality"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GallerySettings.{name} must be a positive int, got {value!r}")
        if self.thumb_side < 16 or self.crop_side < 16:
            raise ValueError(
                "GallerySettings thumb_side and crop_side must be >= 16, "
                f"got {self.thumb_side!r}, {self.crop_side!r}"
            )
        if self.thumb_quality > 100:
            raise ValueError(f"GallerySettings.thumb_quality must be in 1..100, got {self.thumb_quality!r}")
        if self.thumb_format not in _THUMB_FORMATS:
            raise ValueError(
                f"GallerySettings.thumb_format must be one of {sorted(_THUMB_FORMATS)}, "
                f"got {self.thumb_format!r}"
            )
        if not 0.0 <= float(self.heat_alpha) <= 1.0:
            raise ValueError(f"GallerySettings.heat_alpha must be in [0, 1], got {self.heat_alpha!r}")


@dataclass(frozen=True, eq=False)
class AttentionMaps:
    """What the model's forward pass saved about where texture came from (see `load_attention`)."""

    soft: np.ndarray  # (h, w) float32 on the LR grid: relevance of the chosen reference patch
    hard: np.ndarray | None = None  # (h, w) int64: index into the union of the references' lv3 positions
    # lv3 grid (rows, cols) of each reference as the model saw it, in rank order; None → derived from
    # the reference files (top-left crop to a multiple of 4, then /4, as ttsr_core prepares them).
    ref_grids: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        soft = np.asarray(self.soft)
        if soft.ndim != 2 or 0 in soft.shape or not np.issubdtype(soft.dtype, np.number):
            raise ValueError(
                f"soft attention must be a non-empty numeric (h, w) array, got {soft.shape} {soft.dtype}"
            )
        object.__setattr__(
            self, "soft", np.nan_to_num(soft.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        )
        if self.hard is not None:
            hard = np.asarray(self.hard)
            if hard.shape != soft.shape or not np.issubdtype(hard.dtype, np.integer):
                raise ValueError(
                    f"hard attention must be an integer array of shape {soft.shape}, "
                    f"got {hard.shape} {hard.dtype}"
                )
            object.__setattr__(self, "hard", hard.astype(np.int64))
        if self.ref_grids is not None:
            grids = tuple((int(r), int(c)) for r, c in self.ref_grids)
            if any(r <= 0 or c <= 0 for r, c in grids):
                raise ValueError(f"ref_grids must hold positive (rows, cols) pairs, got {self.ref_grids!r}")
            object.__setattr__(self, "ref_grids", grids)


@dataclass(frozen=True)
class GalleryReference:
    """One reference photo that lent texture; rank 0 is the best."""

    label: str  # shown as text (the album-relative path)
    path: Path | None  # the full-resolution file, linked and cropped; None when unknown
    rank: int = 0
    cosine: float | None = None  # retrieval similarity of the embeddings
    relevance: float | None = None  # the texture model's own matching score

    def __post_init__(self) -> None:
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class GalleryCard:
    """Everything one card shows about one enhancement attempt of one target photo."""

    key: str  # unique in the gallery, [A-Za-z0-9_-]: used for element ids and cache names
    title: str  # the target's album-relative path (shown escaped)
    status: CardStatus
    target_path: Path | None  # the low-resolution input
    enhanced_path: Path | None = None
    bicubic_path: Path | None = None  # a bicubic upscale of the target at the output's size (link only)
    references: tuple[GalleryReference, ...] = ()
    model: str = ""
    timings: tuple[tuple[str, float], ...] = ()  # ("model_s", 1.5), shown in the given order
    details: tuple[tuple[str, str], ...] = ()  # further label/value rows (device, embedder, run, params)
    error: str | None = None
    # The saved attention, or the file it was saved to (loaded with `load_attention`).
    attention: AttentionMaps | Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY_RE.fullmatch(self.key):
            raise ValueError(f"GalleryCard.key must match {_KEY_RE.pattern}, got {self.key!r}")
        object.__setattr__(self, "status", CardStatus(self.status))
        for name in ("target_path", "enhanced_path", "bicubic_path"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if isinstance(self.attention, (str, os.PathLike)):
            object.__setattr__(self, "attention", Path(self.attention))
        elif self.attention is not None and not isinstance(self.attention, (AttentionMaps, Path)):
            raise TypeError(
                "GalleryCard.attention must be AttentionMaps, a path or None, "
                f"got {type(self.attention).__name__}"
            )
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "timings", tuple((str(k), float(v)) for k, v in self.timings))
        object.__setattr__(self, "details", tuple((str(k), str(v)) for k, v in self.details))


@dataclass(frozen=True)
class DetailGain:
    """No-reference comparison of the enhanced output with the plain bicubic upscale.

    There is no ground truth in an album, so neither number says "better". ``detail_db`` is
    10·log10 of the ratio of Laplacian energy (mean squared 4-neighbour Laplacian of luma) of the
    output over the bicubic upscale: > 0 means more high-frequency content than bicubic (real
    texture, but also noise, ringing or hallucinated detail would count). ``lr_psnr_db`` is the PSNR
    (luma) of the output bicubic-downscaled back to the input size against the input: how faithful
    the output stays to what was photographed; ``bicubic_lr_psnr_db`` is the same for the bicubic
    upscale, the baseline that number should be read against.
    """

    detail_db: float
    lr_psnr_db: float
    bicubic_lr_psnr_db: float


# ---------------------------------------------------------------- attention and measurements


def load_attention(path: PathLike) -> AttentionMaps:
    """Read a saved attention map: ``.npy`` holding the soft map (h, w), or ``.npz`` with ``soft``
    (also accepted: ``soft_attention``), optionally ``hard``/``hard_attention`` (h, w) int and
    ``ref_grids`` (n, 2). Raises OSError or ValueError when missing or unusable.
    """
    path = Path(path)
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):  # .npy
        return AttentionMaps(loaded)
    with loaded:  # .npz: a lazily reading archive
        data = {name: np.array(loaded[name]) for name in loaded.files}
    soft = data.get("soft", data.get("soft_attention"))
    if soft is None:
        raise ValueError(f"{str(path)!r} holds no 'soft' array (found {sorted(data)})")
    hard = data.get("hard", data.get("hard_attention"))
    grids = data.get("ref_grids")
    if hard is not None:
        hard = hard.reshape(soft.shape) if hard.size == soft.size else hard
    ref_grids = (
        None if grids is None else tuple((int(r), int(c)) for r, c in np.asarray(grids).reshape(-1, 2))
    )
    return AttentionMaps(soft, hard, ref_grids)


def peak_region(soft: np.ndarray, window: int) -> tuple[int, int]:
    """(row, col) of the highest soft attention inside the window × window box of highest mean.

    A single hot position can be noise; the box picks the region, the max inside it the point
    that both the output crop and the reference crop are centred on. soft: (h, w).
    """
    if soft.ndim != 2 or 0 in soft.shape:
        raise ValueError(f"soft attention must be a non-empty (h, w) array, got shape {soft.shape}")
    h, w = soft.shape
    wy, wx = max(1, min(int(window), h)), max(1, min(int(window), w))
    # Integral image: box sums for every top-left corner in O(h·w).
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(soft.astype(np.float64), axis=0), axis=1)
    sums = (
        integral[wy:, wx:] - integral[:-wy, wx:] - integral[wy:, :-wx] + integral[:-wy, :-wx]
    )  # (h-wy+1, w-wx+1)
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    box = soft[top : top + wy, left : left + wx]
    r, c = np.unravel_index(int(np.argmax(box)), box.shape)
    return int(top + r), int(left + c)


def _luma(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def laplacian_energy(rgb: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of luma: a no-reference high-frequency measure. rgb (H, W, 3)."""
    y = _luma(rgb)
    if y.shape[0] < 3 or y.shape[1] < 3:
        return 0.0
    lap = 4.0 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap.astype(np.float64) ** 2))


def _psnr_luma(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((_luma(a).astype(np.float64) - _luma(b)) ** 2))
    return 99.0 if mse < 1e-10 else 10.0 * math.log10(255.0**2 / mse)


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL bicubic resize of uint8 RGB (H, W, 3) → (height, width, 3), the same bicubic TTSR's LR↑ uses."""
    if (rgb.shape[1], rgb.shape[0]) == (width, height):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC))


def detail_gain(lr: np.ndarray, enhanced: np.ndarray, bicubic: np.ndarray | None = None) -> DetailGain:
    """Compare the output (H, W, 3) with the bicubic upscale of lr (h, w, 3); see DetailGain."""
    height, width = enhanced.shape[:2]
    if bicubic is None:
        bicubic = resize_rgb(lr, width, height)
    if bicubic.shape != enhanced.shape:
        raise ValueError(f"bicubic {bicubic.shape} and enhanced {enhanced.shape} must have the same shape")
    eps = 1e-6  # a flat image has zero energy; keep the ratio finite
    detail = 10.0 * math.log10((laplacian_energy(enhanced) + eps) / (laplacian_energy(bicubic) + eps))
    lr_h, lr_w = lr.shape[:2]
    return DetailGain(
        detail_db=round(detail, 3),
        lr_psnr_db=round(_psnr_luma(resize_rgb(enhanced, lr_w, lr_h), lr), 3),
        bicubic_lr_psnr_db=round(_psnr_luma(resize_rgb(bicubic, lr_w, lr_h), lr), 3),
    )


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to inferno-like RGB uint8 (..., 3)."""
    stops = np.array([s for s, _ in _INFERNO])
    colours = np.array([c for _, c in _INFERNO], dtype=np.float64)
    v = np.clip(values, 0.0, 1.0)
    out = np.stack([np.interp(v, stops, colours[:, ch]) for ch in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def heat_overlay(base: np.ndarray, soft: np.ndarray, alpha: float = 0.6) -> tuple[np.ndarray, float, float]:
    """Blend the soft map (h, w), stretched to base (H, W, 3), over a greyed base → (H, W, 3), min, max.

    The colours span the map's own min..max (returned, for the legend): a relative map, so two
    cards' colours are not comparable; their numbers are.
    """
    height, width = base.shape[:2]
    lo, hi = float(soft.min()), float(soft.max())
    norm = (soft - lo) / (hi - lo) if hi > lo else np.zeros_like(soft)
    # Bilinear on the float map: the LR grid is coarse, nearest would draw blocks.
    stretched = np.asarray(
        Image.fromarray(norm.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )
    grey = _luma(base)[..., None].repeat(3, axis=2) * 0.8 + 25.0
    # Opacity grows with attention, so the photo stays readable where the model found little.
    weight = alpha * (0.35 + 0.65 * np.clip(stretched, 0.0, 1.0))[..., None]
    blended = grey * (1.0 - weight) + heat_colours(stretched).astype(np.float32) * weight
    return np.clip(np.round(blended), 0, 255).astype(np.uint8), lo, hi


# ---------------------------------------------------------------- cache bookkeeping


def _file_signature(path: Path) -> str:
    """Content identity without reading the file: resolved path, size and mtime (ns)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _digest(*parts: object) -> str:
    text = json.dumps([_CACHE_VERSION, *[str(p) for p in parts]], ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale >= 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # LANCZOS with reducing_gap: fast box pre-shrink, then a sharp final filter.
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))


def ensure_bicubic(
    target: PathLike, cache_dir: PathLike, size: tuple[int, int] | None = None, quality: int = 95
) -> Path:
    """Write (once, cached by the target's path/size/mtime) the bicubic upscale of ``target``.

    ``size`` is (width, height) of the enhanced output, so the two compare pixel for pixel;
    None → ×4. Written as JPEG q95 4:4:4 into ``cache_dir``; returns its path.
    """
    target = Path(target)
    signature = _file_signature(target)
    if size is not None:
        width, height = size
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be a positive (width, height), got {size!r}")
    name = _digest("bicubic", signature, size, quality) + ".jpg"
    out = Path(cache_dir) / name
    if out.is_file():
        return out
    rgb, _meta = load_rgb(target)
    width, height = size if size is not None else (rgb.shape[1] * SCALE, rgb.shape[0] * SCALE)
    return save_atomic(out, resize_rgb(rgb, width, height), format="JPEG", quality=quality)


class _Sources:
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
class _Picture:
    """A generated image on the page: its path relative to the gallery folder and its pixel size."""

    rel: str
    width: int
    height: int


class _Assets:
    """The gallery's assets folder: content-keyed files, and which ones this render used."""

    def __init__(self, out_dir: Path, settings: GallerySettings) -> None:
        self.out_dir = out_dir
        self.root = out_dir / ASSETS_DIR
        self.settings = settings
        self.used: set[Path] = set()

    def picture(self, path: Path) -> _Picture:
        self.used.add(path)
        with Image.open(path) as im:
            width, height = im.size
        return _Picture(path.relative_to(self.out_dir).as_posix(), width, height)

    def thumb(self, source: Path, sources: _Sources) -> _Picture | None:
        """A cached thumbnail of a source file, keyed by its signature; None when unreadable."""
        try:
            signature = _file_signature(source)
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
                _digest("thumb", signature, s.thumb_side, s.thumb_format, s.thumb_quality)
                + _THUMB_FORMATS[s.thumb_format]
            )
        )
        if not out.is_file():
            rgb = sources.get(source)
            if rgb is None:
                return None
            save_atomic(out, _thumbnail(rgb, s.thumb_side), format=s.thumb_format, quality=s.thumb_quality)
        return self.picture(out)


# ---------------------------------------------------------------- one card's derived images


@dataclass(frozen=True)
class _Crop:
    label: str
    picture: _Picture
    note: str = ""


@dataclass(frozen=True)
class _CardView:
    card: GalleryCard
    index: int
    target_thumb: _Picture | None
    bicubic_thumb: _Picture | None
    enhanced_thumb: _Picture | None
    ref_thumbs: tuple[_Picture | None, ...]
    heat: _Picture | None
    heat_range: tuple[float, float] | None
    crops: tuple[_Crop, ...]
    gain: DetailGain | None
    sizes: dict[str, str]
    notes: tuple[str, ...]


def _attention_of(card: GalleryCard) -> tuple[AttentionMaps | None, str, str]:
    """(maps, cache signature, note) for the card's attention, never raising for a bad file."""
    att = card.attention
    if att is None:
        return None, "none", "no soft-attention map was saved for this run: crops are centred"
    if isinstance(att, AttentionMaps):
        digest = hashlib.sha256(
            att.soft.tobytes() + (b"" if att.hard is None else att.hard.tobytes())
        ).hexdigest()
        return att, f"array:{att.soft.shape}:{digest}:{att.ref_grids}", ""
    try:
        signature = _file_signature(att)
        return load_attention(att), signature, ""
    except FileNotFoundError:
        reason = "file not found"
    except (OSError, ValueError, EOFError) as exc:  # np.load raises all three for damaged files
        reason = f"{type(exc).__name__}: {exc}"
    logger.warning("gallery: attention map %s unusable: %s", att, reason)
    return None, "unusable", f"attention map unusable ({reason}): crops are centred"


def _box(cy: float, cx: float, side: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a side×side box centred near (cy, cx), inside the image."""
    sy, sx = min(side, height), min(side, width)
    top = int(min(max(round(cy - sy / 2), 0), height - sy))
    left = int(min(max(round(cx - sx / 2), 0), width - sx))
    return left, top, left + sx, top + sy


def _reference_point(
    maps: AttentionMaps, peak: tuple[int, int], refs: Sequence[np.ndarray | None]
) -> tuple[int, float, float, float] | str:
    """(reference index, row, col, scale) the hard attention at ``peak`` points to, or why not.

    scale = reference pixels per model pixel (1 unless the model saw a resized reference).
    """
    if maps.hard is None:
        return "the run saved no hard attention, so the reference region is unknown"
    index = int(maps.hard[peak])
    grids: list[tuple[int, int]] = []
    for k, ref in enumerate(refs):
        if maps.ref_grids is not None and k < len(maps.ref_grids):
            grids.append(maps.ref_grids[k])
        elif ref is not None:
            grids.append((ref.shape[0] // SCALE, ref.shape[1] // SCALE))
        else:
            return f"reference {k + 1} is unreadable, so positions after it cannot be located"
    offset = 0
    for k, (rows, cols) in enumerate(grids):
        if index < offset + rows * cols:
            ref = refs[k]
            if ref is None:
                return f"reference {k + 1} is unreadable"
            local = index - offset
            r, c = divmod(local, cols)
            # Exact when the model saw this file as it is; proportional when it saw a resized copy.
            scale = (
                ref.shape[0] / (rows * SCALE)
                if (rows, cols) != (ref.shape[0] // SCALE, ref.shape[1] // SCALE)
                else 1.0
            )
            return k, (r * SCALE + SCALE / 2) * scale, (c * SCALE + SCALE / 2) * scale, scale
        offset += rows * cols
    return f"hard attention index {index} is outside the references' {offset} positions"


def _build_card_assets(
    card: GalleryCard,
    sources: _Sources,
    maps: AttentionMaps | None,
    card_dir: Path,
    settings: GallerySettings,
) -> dict[str, Any]:
    """Generate heat overlay, crops, bicubic thumbnail and the gain for one card; return its meta."""
    meta: dict[str, Any] = {"crops": [], "notes": []}
    notes: list[str] = meta["notes"]
    lr = sources.get(card.target_path)
    enhanced = sources.get(card.enhanced_path)
    if lr is None:
        return meta
    crop = settings.crop_side
    if enhanced is not None:
        out_h, out_w = enhanced.shape[:2]
    else:
        out_h, out_w = lr.shape[0] * SCALE, lr.shape[1] * SCALE
    peak: tuple[int, int] | None = None
    if maps is not None:
        ah, aw = maps.soft.shape
        # The box peak_region averages over covers about one crop of the output.
        peak = peak_region(maps.soft, max(1, round(crop * ah / out_h)))
        cy, cx = (peak[0] + 0.5) * out_h / ah, (peak[1] + 0.5) * out_w / aw
        meta["peak"] = {"row": peak[0], "col": peak[1], "value": float(maps.soft[peak]), "grid": [ah, aw]}
    else:
        cy, cx = out_h / 2, out_w / 2
    left, top, right, bottom = _box(cy, cx, crop, out_h, out_w)
    meta["box"] = [left, top, right, bottom]

    thumb = _thumbnail(lr, settings.thumb_side)
    if maps is not None:
        blended, lo, hi = heat_overlay(thumb, maps.soft, settings.heat_alpha)
        image = Image.fromarray(blended)
        sy, sx = thumb.shape[0] / out_h, thumb.shape[1] / out_w
        ImageDraw.Draw(image).rectangle(
            (left * sx, top * sy, max(left * sx + 2, right * sx - 1), max(top * sy + 2, bottom * sy - 1)),
            outline=(80, 220, 255),
            width=max(1, round(thumb.shape[1] / 160)),
        )
        save_atomic(card_dir / "heat.png", np.asarray(image))
        meta["heat"] = {"file": "heat.png", "min": lo, "max": hi}

    if enhanced is None:
        return meta
    bicubic = resize_rgb(lr, out_w, out_h)
    meta["gain"] = dataclasses.asdict(detail_gain(lr, enhanced, bicubic))
    save_atomic(
        card_dir / "bicubic-thumb.jpg",
        _thumbnail(bicubic, settings.thumb_side),
        format="JPEG",
        quality=settings.thumb_quality,
    )
    meta["bicubic_thumb"] = "bicubic-thumb.jpg"
    crops: list[dict[str, str]] = meta["crops"]

    # LR pixels as the model saw them, nearest-neighbour so each input pixel stays a visible block.
    ry, rx = lr.shape[0] / out_h, lr.shape[1] / out_w
    lr_crop = Image.fromarray(lr).resize(
        (right - left, bottom - top), Image.Resampling.NEAREST, box=(left * rx, top * ry, right * rx, bottom * ry)
    )
    for name, label, pixels in (
        ("crop-lr.png", "input (nearest)", np.asarray(lr_crop)),
        ("crop-bicubic.png", "bicubic", bicubic[top:bottom, left:right]),
        ("crop-enhanced.png", "enhanced", enhanced[top:bottom, left:right]),
    ):
        save_atomic(card_dir / name, np.ascontiguousarray(pixels))
        crops.append({"file": name, "label": label, "note": ""})

    if maps is not None and peak is not None and card.references:
        ref_arrays = [sources.get(ref.path) for ref in card.references]
        point = _reference_point(maps, peak, ref_arrays)
        if isinstance(point, str):
            notes.append(f"no reference crop: {point}")
        else:
            k, ry_, rx_, scale = point
            ref = ref_arrays[k]
            assert ref is not None  # _reference_point checked it
            side = max(1, round(crop * scale))
            rl, rt, rr, rb = _box(ry_, rx_, side, ref.shape[0], ref.shape[1])
            pixels = ref[rt:rb, rl:rr]
            if scale != 1.0:
                pixels = resize_rgb(
                    np.ascontiguousarray(pixels),
                    max(1, round((rr - rl) / scale)),
                    max(1, round((rb - rt) / scale)),
                )
            save_atomic(card_dir / "crop-reference.png", np.ascontiguousarray(pixels))
            label = f"reference {k + 1}" if len(card.references) > 1 else "reference"
            crops.append(
                {
                    "file": "crop-reference.png",
                    "label": label,
                    "note": f"at ({round(rx_)}, {round(ry_)}) in {card.references[k].label}",
                }
            )
    return meta


def _prepare_card(card: GalleryCard, index: int, assets: _Assets) -> _CardView:
    settings = assets.settings
    sources = _Sources()
    notes: list[str] = []
    maps, att_signature, att_note = _attention_of(card)
    if att_note and card.status is CardStatus.succeeded:
        notes.append(att_note)

    target_thumb = assets.thumb(card.target_path, sources) if card.target_path else None
    enhanced_thumb = assets.thumb(card.enhanced_path, sources) if card.enhanced_path else None
    ref_thumbs = tuple(assets.thumb(ref.path, sources) if ref.path else None for ref in card.references)

    signatures: list[str] = []
    for path in (card.target_path, card.enhanced_path, *(ref.path for ref in card.references)):
        try:
            signatures.append(_file_signature(path) if path else "-")
        except OSError:
            signatures.append(f"missing:{path}")
    card_dir = assets.root / "cards" / _digest("card", att_signature, settings, *signatures)
    meta_path = card_dir / "meta.json"
    meta: dict[str, Any] | None = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
    if meta is None:
        card_dir.mkdir(parents=True, exist_ok=True)
        meta = _build_card_assets(card, sources, maps, card_dir, settings)
        meta["sizes"] = {}
        for what, path in (("target", card.target_path), ("enhanced", card.enhanced_path)):
            rgb = sources.peek(path)
            if rgb is not None:
                meta["sizes"][what] = f"{rgb.shape[1]}×{rgb.shape[0]}"
            elif path is not None:
                try:
                    header = read_header(path)
                    meta["sizes"][what] = f"{header.width}×{header.height}"
                except (OSError, UnreadableImageError):
                    pass
        # Problems are part of what the page says, so they are cached with the images.
        meta["problems"] = {str(p): why for p, why in sources.problems.items()}
        _write_text_atomic(meta_path, json.dumps(meta, ensure_ascii=False, sort_keys=True))
    assets.used.add(card_dir)

    problems: dict[str, str] = dict(meta.get("problems", {}))
    problems.update({str(p): why for p, why in sources.problems.items()})
    labelled = [("input", card.target_path), ("enhanced output", card.enhanced_path)]
    labelled += [(f"reference {ref.label}", ref.path) for ref in card.references]
    for label, path in labelled:
        if path is not None and str(path) in problems:
            notes.append(f"{label}: {problems[str(path)]}")
    notes.extend(str(n) for n in meta.get("notes", []))

    def pic(name: object) -> _Picture | None:
        if not isinstance(name, str) or not (card_dir / name).is_file():
            return None
        return assets.picture(card_dir / name)

    heat_meta = meta.get("heat")
    heat = pic(heat_meta.get("file")) if isinstance(heat_meta, dict) else None
    crops = []
    for entry in meta.get("crops", []):
        picture = pic(entry.get("file"))
        if picture is not None:
            crops.append(_Crop(str(entry.get("label", "")), picture, str(entry.get("note", ""))))
    gain_meta = meta.get("gain")
    return _CardView(
        card=card,
        index=index,
        target_thumb=target_thumb,
        bicubic_thumb=pic(meta.get("bicubic_thumb")),
        enhanced_thumb=enhanced_thumb,
        ref_thumbs=ref_thumbs,
        heat=heat,
        heat_range=(heat_meta["min"], heat_meta["max"])
        if heat is not None and isinstance(heat_meta, dict)
        else None,
        crops=tuple(crops),
        gain=DetailGain(**gain_meta) if isinstance(gain_meta, dict) else None,
        sizes=dict(meta.get("sizes", {})),
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- HTML


def _e(text: object) -> str:
    """HTML-escape anything that may come from the album (names, paths, errors), quotes included."""
    return html.escape(str(text), quote=True)


def file_href(path: Path, out_dir: Path) -> str:
    """A link from the gallery folder to ``path``: relative and percent-encoded, file: URI across drives.

    The result still needs HTML-escaping (`_e`) when put into an attribute.
    """
    path = Path(os.path.abspath(path))
    try:
        rel = Path(os.path.relpath(path, out_dir)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return path.as_uri()
    # Every character outside the unreserved set is encoded, so "#", "?" and "%" in album names
    # stay part of the path; "/" separates segments.
    return quote(rel, safe="/")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_timing(name: str, seconds: float) -> tuple[str, str]:
    label = name[:-2] if name.endswith("_s") else name
    return label.replace("_", " "), f"{seconds:.2f} s" if name.endswith("_s") else f"{seconds:g}"


def _figure(
    label: str, picture: _Picture | None, link: Path | None, out_dir: Path, alt: str, extra: str = ""
) -> str:
    caption = f"<figcaption>{_e(label)}{(' · ' + _e(extra)) if extra else ''}</figcaption>"
    if picture is None:
        body = f'<div class="missing" role="img" aria-label="{_e(alt)}">{_e(label)}: not available</div>'
    else:
        body = (
            f'<img src="{_e(quote(picture.rel, safe="/"))}" '
            f'width="{picture.width}" height="{picture.height}" '
            f'loading="lazy" decoding="async" alt="{_e(alt)}">'
        )
    if link is not None and picture is not None:
        body = f'<a href="{_e(file_href(link, out_dir))}" title="open full resolution">{body}</a>'
    return f"<figure>{body}{caption}</figure>"


def _card_html(view: _CardView, out_dir: Path, total: int) -> str:
    card = view.card
    problem = card.status is CardStatus.failed or (
        card.status is CardStatus.succeeded and view.enhanced_thumb is None
    )
    status_rank = 0 if card.status is CardStatus.failed else (1 if problem else 2)
    best = card.references[0] if card.references else None
    relevance = best.relevance if best is not None else None
    gain = view.gain.detail_db if view.gain is not None else None
    data = (
        f'data-order="{view.index}" data-status="{card.status.value}" data-rank="{status_rank}" '
        f'data-relevance="{"" if relevance is None else repr(float(relevance))}" '
        f'data-gain="{"" if gain is None else repr(gain)}"'
    )
    number = view.index + 1
    prev_link = (
        f'<a class="prev" href="#card-{view.index - 1}">← previous</a>'
        if view.index > 0
        else '<a class="prev" hidden></a>'
    )
    next_link = (
        f'<a class="next" href="#card-{view.index + 1}">next →</a>'
        if view.index + 1 < total
        else '<a class="next" hidden></a>'
    )
    badge = "failed" if card.status is CardStatus.failed else ("output missing" if problem else "succeeded")
    badge_class = "bad" if problem else "ok"
    head = (
        f'<header><span class="num">{number}</span><h2 title="{_e(card.title)}">{_e(card.title)}</h2>'
        f'<span class="badge {badge_class}">{_e(badge)}</span>'
        f'<span class="chips">relevance {_e(_fmt(relevance))} · '
        f"gain {_e('–' if gain is None else f'{gain:+.2f} dB')}</span>"
        f'<nav class="flip">{prev_link} {next_link}</nav></header>'
    )
    sizes = view.sizes
    figures = [
        _figure(
            "input",
            view.target_thumb,
            card.target_path,
            out_dir,
            f"input {card.title}",
            sizes.get("target", ""),
        )
    ]
    if card.status is CardStatus.succeeded:
        figures.append(
            _figure(
                "bicubic ×4",
                view.bicubic_thumb,
                card.bicubic_path,
                out_dir,
                f"bicubic upscale of {card.title}",
            )
        )
        figures.append(
            _figure(
                "enhanced",
                view.enhanced_thumb,
                card.enhanced_path,
                out_dir,
                f"enhanced {card.title}",
                sizes.get("enhanced", ""),
            )
        )
    for ref, thumb in zip(card.references, view.ref_thumbs, strict=True):
        label = f"reference {ref.rank + 1}" if len(card.references) > 1 else "reference"
        figures.append(_figure(label, thumb, ref.path, out_dir, f"{label} {ref.label}", ref.label))
    if view.heat is not None and view.heat_range is not None:
        lo, hi = view.heat_range
        figures.append(
            _figure(
                "soft attention",
                view.heat,
                None,
                out_dir,
                f"soft attention over {card.title}",
                f"{lo:.2f}–{hi:.2f}",
            )
        )
    panels = f'<div class="panels">{"".join(figures)}</div>'

    crops = ""
    if view.crops:
        zoom_id = f"zoom-{view.index}"
        crop_figs = "".join(
            f'<figure><img src="{_e(quote(c.picture.rel, safe="/"))}" '
            f'width="{c.picture.width}" height="{c.picture.height}" '
            f'loading="lazy" decoding="async" alt="{_e(c.label)} crop">'
            f"<figcaption>{_e(c.label)}{(' · ' + _e(c.note)) if c.note else ''}</figcaption></figure>"
            for c in view.crops
        )
        crops = (
            f'<section class="crops-box"><input type="checkbox" class="zoom-toggle" id="{zoom_id}">'
            f'<h3>1:1 crops where soft attention is highest <label for="{zoom_id}">zoom ×2</label></h3>'
            f'<div class="crops">{crop_figs}</div></section>'
        )

    rows: list[tuple[str, str]] = []
    for ref in card.references:
        prefix = f"ref {ref.rank + 1} " if len(card.references) > 1 else ""
        rows.append((f"{prefix}cosine", _fmt(ref.cosine)))
        rows.append((f"{prefix}relevance", _fmt(ref.relevance)))
    if view.gain is not None:
        rows.append(("detail gain", f"{view.gain.detail_db:+.2f} dB"))
        rows.append(
            ("LR fidelity", f"{view.gain.lr_psnr_db:.1f} dB (bicubic {view.gain.bicubic_lr_psnr_db:.1f})")
        )
    if card.model:
        rows.append(("model", card.model))
    rows.extend(_fmt_timing(k, v) for k, v in card.timings)
    rows.extend(card.details)
    scores = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in rows)
    notes = "".join(f"<li>{_e(n)}</li>" for n in view.notes)
    error = ""
    if card.error:
        text = (
            card.error
            if len(card.error) <= _ERROR_CHARS
            else card.error[:_ERROR_CHARS] + "\n… (cut; the database keeps the full text)"
        )
        first = card.error.strip().splitlines()[0] if card.error.strip() else card.error
        error = (
            f'<details class="error" open><summary>{_e(first[:200])}</summary><pre>{_e(text)}</pre></details>'
        )
    return (
        f'<article class="card{" problem" if problem else ""}" id="card-{view.index}" tabindex="-1" {data}>'
        f'{head}{error}{panels}{crops}<dl class="scores">{scores}</dl>'
        f"{f'<ul class=notes>{notes}</ul>' if notes else ''}</article>"
    )


_CSS = """
:root{color-scheme:light dark;--bg:#f4f4f2;--fg:#1d1d1f;--card:#fff;--muted:#6b6b70;--line:#ddd;
--ok:#1f7a3a;--bad:#b3261e;--accent:#0b6bcb}
@media (prefers-color-scheme:dark){:root{--bg:#18181a;--fg:#ececec;--card:#242427;--muted:#a0a0a8;
--line:#3a3a3f;--ok:#6fcf8a;--bad:#ff8a80;--accent:#7ab7ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
body>header{padding:16px 24px 8px}
h1{margin:0 0 4px;font-size:22px}
.meta{margin:0;color:var(--muted);display:flex;flex-wrap:wrap;gap:4px 18px}
.meta b{color:var(--fg);font-weight:600}
#controls{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;padding:8px 24px;position:sticky;
top:0;z-index:2;background:var(--bg);border-bottom:1px solid var(--line)}
#controls label{color:var(--muted)}
#controls select,#controls input{font:inherit;padding:2px 6px}
#controls .hint{color:var(--muted);margin-left:auto}
main{padding:12px 24px 24px;display:flex;flex-direction:column;gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;
scroll-margin-top:56px}
.card.problem{border-left:5px solid var(--bad)}
.card:focus{outline:2px solid var(--accent);outline-offset:2px}
.card>header{display:flex;align-items:baseline;gap:10px;flex-wrap:wrap}
.card h2{font-size:16px;margin:0;overflow-wrap:anywhere;flex:1 1 240px}
.num{color:var(--muted);font-variant-numeric:tabular-nums}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;color:#fff}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}
.chips{color:var(--muted);font-variant-numeric:tabular-nums}
.flip a{color:var(--accent);text-decoration:none;margin-left:8px}
.panels{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
figure{margin:0}
.panels figure{width:220px}
.panels img,.panels .missing{display:block;width:220px;height:165px;object-fit:contain;
background:repeating-conic-gradient(#8881 0 25%,#0000 0 50%) 0 0/16px 16px;border-radius:4px}
.missing{display:flex!important;align-items:center;justify-content:center;color:var(--muted);
border:1px dashed var(--line);text-align:center;padding:8px}
figcaption{color:var(--muted);font-size:12px;margin-top:3px;overflow-wrap:anywhere}
.crops-box h3{font-size:13px;font-weight:600;margin:6px 0;color:var(--muted)}
.crops-box label{color:var(--accent);cursor:pointer;font-weight:400;margin-left:8px;
text-decoration:underline}
.zoom-toggle{position:absolute;opacity:0;pointer-events:none}
.crops{display:flex;flex-wrap:wrap;gap:10px}
.crops figure{max-width:340px}
.crops img{display:block;image-rendering:pixelated;border-radius:3px;max-width:none}
.zoom-toggle:checked~.crops img{width:auto;height:auto;zoom:2}
.zoom-toggle:focus-visible~h3 label{outline:2px solid var(--accent)}
.scores{display:flex;flex-wrap:wrap;gap:4px 20px;margin:10px 0 0;font-variant-numeric:tabular-nums}
.scores div{display:flex;gap:6px}
.scores dt{color:var(--muted)}.scores dd{margin:0;overflow-wrap:anywhere}
.notes{color:var(--muted);margin:8px 0 0;padding-left:18px;font-size:12px}
.error summary{color:var(--bad);font-weight:600;cursor:pointer;overflow-wrap:anywhere}
.error pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);padding:8px;
border-radius:6px;max-height:240px;overflow:auto;font-size:12px}
.empty{color:var(--muted);padding:40px;text-align:center}
body>footer{padding:8px 24px 32px;color:var(--muted);font-size:12px;max-width:1000px}
img.broken{outline:2px dashed var(--bad)}
"""

_JS = """
(function () {
  'use strict';
  var root = document.documentElement;
  var main = document.getElementById('cards');
  var cards = Array.prototype.slice.call(main.querySelectorAll('article.card'));
  // How many images have decoded; read by the browser test, harmless otherwise.
  function tally() {
    var loaded = 0, broken = 0, images = document.images;
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete) { if (images[i].naturalWidth > 0) loaded++; else broken++; }
    }
    root.dataset.imagesTotal = images.length;
    root.dataset.imagesLoaded = loaded;
    root.dataset.imagesBroken = broken;
  }
  Array.prototype.forEach.call(document.images, function (img) {
    img.addEventListener('load', tally);
    img.addEventListener('error', function () { img.classList.add('broken'); tally(); });
  });
  tally();
  window.addEventListener('load', tally);

  var controls = document.getElementById('controls');
  var sortBy = document.getElementById('sort-by');
  var show = document.getElementById('show');
  var search = document.getElementById('search');
  var counter = document.getElementById('shown');
  controls.hidden = false;
  function num(card, key) {
    var v = parseFloat(card.dataset[key]);
    return isNaN(v) ? -Infinity : v;
  }
  function byOrder(a, b) { return num(a, 'order') - num(b, 'order'); }
  function title(card) { return card.querySelector('h2').textContent; }
  var orders = {
    recorded: byOrder,
    failures: function (a, b) { return num(a, 'rank') - num(b, 'rank') || byOrder(a, b); },
    relevance: function (a, b) { return num(b, 'relevance') - num(a, 'relevance') || byOrder(a, b); },
    gain: function (a, b) { return num(b, 'gain') - num(a, 'gain') || byOrder(a, b); },
    name: function (a, b) { return title(a).localeCompare(title(b)) || byOrder(a, b); }
  };
  function visible() { return cards.filter(function (c) { return !c.hidden; }); }
  function apply() {
    var sorted = cards.slice().sort(orders[sortBy.value] || orders.recorded);
    var needle = search.value.trim().toLowerCase();
    sorted.forEach(function (card) {
      var status = card.dataset.rank === '2' ? 'ok' : 'problem';
      var title = card.querySelector('h2').textContent.toLowerCase();
      card.hidden = (show.value !== 'all' && show.value !== status) || (needle && title.indexOf(needle) < 0);
      main.appendChild(card);
    });
    cards = sorted;
    var shown = visible();
    shown.forEach(function (card, i) {
      var prev = card.querySelector('a.prev'), next = card.querySelector('a.next');
      prev.hidden = i === 0; next.hidden = i === shown.length - 1;
      if (i > 0) prev.setAttribute('href', '#' + shown[i - 1].id);
      if (i < shown.length - 1) next.setAttribute('href', '#' + shown[i + 1].id);
      card.querySelector('.num').textContent = String(i + 1);
    });
    counter.textContent = shown.length + ' of ' + cards.length;
  }
  [sortBy, show].forEach(function (el) { el.addEventListener('change', apply); });
  search.addEventListener('input', apply);

  var current = null;
  function flip(step) {
    var shown = visible();
    if (!shown.length) return;
    var i = current ? shown.indexOf(current) : -1;
    if (i < 0) {
      // Start from the card at the top of the viewport.
      i = 0;
      for (var j = 0; j < shown.length; j++) {
        if (shown[j].getBoundingClientRect().bottom > 60) { i = j; break; }
      }
      if (step > 0 && shown[i].getBoundingClientRect().top > 80) step = 0;
    }
    var k = Math.max(0, Math.min(shown.length - 1, i + step));
    current = shown[k];
    current.scrollIntoView({block: 'start'});
    current.focus({preventScroll: true});
    if (history.replaceState) history.replaceState(null, '', '#' + current.id);
  }
  document.addEventListener('keydown', function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
    var tag = ev.target && ev.target.tagName;
    if (tag === 'INPUT' && ev.target.type !== 'checkbox' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    if (ev.key === 'ArrowRight') { flip(1); ev.preventDefault(); }
    else if (ev.key === 'ArrowLeft') { flip(-1); ev.preventDefault(); }
  });
  main.addEventListener('click', function (ev) {
    var card = ev.target.closest && ev.target.closest('article.card');
    if (card) current = card;
  });
  apply();
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _page(
    views: Sequence[_CardView],
    out_dir: Path,
    title: str,
    summary: Sequence[tuple[str, str]],
    generated: datetime,
) -> str:
    total = len(views)
    failed = sum(1 for v in views if v.card.status is CardStatus.failed)
    cards_html = (
        "\n".join(_card_html(v, out_dir, total) for v in views)
        or '<p class="empty">No enhancements to show.</p>'
    )
    meta = [*summary, ("cards", str(total)), ("failed", str(failed))]
    meta_html = "".join(f"<span>{_e(k)} <b>{_e(v)}</b></span>" for k, v in meta)
    # Hash-pinned inline code only: no network source is allowed, and text injected through an
    # album name could not run even if escaping were ever missed.
    csp = (
        f"default-src 'none'; img-src 'self' file: data:; style-src {_csp_hash(_CSS)}; "
        f"script-src {_csp_hash(_JS)}; base-uri 'none'; form-action 'none'"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="referrer" content="no-referrer">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{_e(title)}</h1><p class="meta">{meta_html}</p></header>
<div id="controls" hidden>
<label for="sort-by">sort</label>
<select id="sort-by"><option value="recorded">as listed</option>
<option value="failures">failures first</option>
<option value="relevance">relevance, highest first</option>
<option value="gain">detail gain, highest first</option>
<option value="name">name</option></select>
<label for="show">show</label>
<select id="show"><option value="all">all</option><option value="problem">failures only</option>
<option value="ok">succeeded only</option></select>
<label for="search">name contains</label><input id="search" type="search" autocomplete="off">
<span id="shown"></span>
<span class="hint">← / → flip cards · click a picture for full resolution</span>
</div>
<noscript><p class="meta">Sorting, filtering and arrow-key flipping need JavaScript;
everything else works without it.</p></noscript>
<main id="cards">
{cards_html}
</main>
<footer>
<p><b>How to read a card.</b> <i>input</i> is the low-resolution photo, <i>bicubic ×4</i> a plain
upscale of it, <i>enhanced</i> the texture transformer's output, <i>reference</i> the high-resolution
photo it took texture from. The crops are 1:1 pixels of the output, centred where the model's soft
attention (how well the best reference patch matched) is highest; the reference crop shows the region
the hard attention picked there. <i>cosine</i> is the retrieval similarity of the two photos'
embeddings, <i>relevance</i> the model's own texture matching score. There is no ground truth in an
album, so <i>detail gain</i> is a no-reference proxy: 10·log10 of the high-frequency (Laplacian)
energy of the output over that of the bicubic upscale; positive means more fine detail than bicubic,
which real texture gives but so would noise or artefacts. <i>LR fidelity</i> is the PSNR of the output
scaled back down against the input (higher = more faithful to what was photographed), next to the same
number for bicubic.</p>
<p>Generated {_e(generated.strftime("%Y-%m-%d %H:%M UTC"))} by refsr-album. Full-resolution images
are linked, not copied: keep this folder where it is relative to the album, or links break.</p>
</footer>
<script>{_JS}</script>
</body>
</html>
"""


# ---------------------------------------------------------------- entry point


def _prune(assets: _Assets) -> None:
    """Remove cached thumbnails/cards that this render did not use (only our own hex-named entries)."""
    for sub in ("thumbs", "cards", "bicubic"):
        folder = assets.root / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry in assets.used or not _HEX_NAME_RE.fullmatch(entry.name):
                continue
            if entry.is_dir():
                for child in entry.iterdir():
                    child.unlink(missing_ok=True)
                entry.rmdir()
            else:
                entry.unlink(missing_ok=True)


def render_gallery(
    cards: Sequence[GalleryCard],
    out_dir: PathLike,
    *,
    title: str = "refsr gallery",
    summary: Sequence[tuple[str, str]] = (),
    settings: GallerySettings = GallerySettings(),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and its ``assets/`` for ``cards`` (shown in the given order).

    Thumbnails, crops and heat overlays are generated once and reused while their sources'
    size/mtime do not change; full-resolution files are linked relatively, never copied.
    ``summary`` rows (label, value) go under the title; ``progress(done, total)`` is called per card.
    Returns the index.html path.
    """
    keys = [card.key for card in cards]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"card keys must be unique, got duplicates {duplicates}")
    if not isinstance(settings, GallerySettings):
        raise TypeError(f"settings must be GallerySettings, got {type(settings).__name__}")
    out = Path(os.path.abspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)
    assets = _Assets(out, settings)
    for sub in ("thumbs", "cards", "bicubic"):
        (assets.root / sub).mkdir(parents=True, exist_ok=True)
    for card in cards:
        if card.bicubic_path is not None:
            assets.used.add(Path(os.path.abspath(card.bicubic_path)))
    views = []
    for i, card in enumerate(cards):
        views.append(_prepare_card(card, i, assets))
        if progress is not None:
            progress(i + 1, len(cards))
    index = out / INDEX_NAME
    _write_text_atomic(index, _page(views, out, title, summary, datetime.now(UTC)))
    if settings.prune:
        _prune(assets)
    logger.info("gallery of %d cards written to %s", len(cards), index)
    return index


__all__ = [
    "AttentionMaps",
    "CardStatus",
    "DetailGain",
    "GalleryCard",
    "GalleryReference",
    "GallerySettings",
    "detail_gain",
    "ensure_bicubic",
    "file_href",
    "heat_colours",
    "heat_overlay",
    "laplacian_energy",
    "load_attention",
    "peak_region",
    "render_gallery",
    "resize_rgb",
]
