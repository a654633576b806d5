"""Image IO for an album: header reads, any-mode → RGB decoding, shrinking, atomic metadata-keeping writes."""

from __future__ import annotations

import functools
import io
import logging
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from durable.files import atomic_write
from pipeline.provenance.facts import Stamp

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# 100 MP: a 12 000 × 8 000 panorama still loads; anything bigger is almost certainly hostile or a
# scan we cannot super-resolve in memory anyway.
DEFAULT_MAX_PIXELS = 100_000_000
ORIENTATION_TAG = 0x0112
# EXIF orientations 5..8 swap the axes (transpose/rotate by 90°).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Formats whose Pillow writers take both `exif=` and `icc_profile=`.
_METADATA_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF"})
_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
# Everything Pillow's decoders throw on hostile or damaged input; kept narrow enough that a bug in
# our own code (AttributeError, NameError) still surfaces as itself.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
    struct.error, zlib.error, MemoryError, UnidentifiedImageError,
    Image.DecompressionBombError, Image.DecompressionBombWarning,
)


class UnreadableImageError(ValueError):
    """A file that is not a decodable image within our limits; the message is one line naming it."""

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split()) or "unknown error"
        super().__init__(f"unreadable image {str(self.path)!r}: {self.reason}")


class ImageHeader(NamedTuple):
    """Size as displayed (EXIF orientation applied) and Pillow's format name, read without decoding."""

    width: int
    height: int
    format: str


@dataclass(frozen=True)
class ImageMeta:
    """What a decoded photo was, and the metadata to carry onto anything derived from it."""

    format: str  # Pillow's name: "JPEG", "PNG", ...
    mode: str  # Pillow mode before conversion: "CMYK", "I;16", "P", ...
    width: int  # after EXIF orientation
    height: int  # after EXIF orientation
    exif: bytes | None  # orientation reset to 1, because the pixels are already oriented
    icc_profile: bytes | None  # only an RGB profile that describes the returned pixels
    had_alpha: bool  # alpha/transparency was composited over white
    bit_depth: int  # bits per sample of the decoded source mode (1, 8, 16, 32)
    orientation: int = 1  # the source's EXIF orientation, before we applied it

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ImageMeta.{name} must be a positive int, got {value!r}")
        if not 1 <= self.orientation <= 8:
            raise ValueError(f"ImageMeta.orientation must be in 1..8, got {self.orientation!r}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@functools.cache
def heif_available() -> bool:
    """Register pillow_heif's opener once if it is installed; HEIC support stays optional."""
    try:
        import pillow_heif  # type: ignore[import-not-found]
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@contextmanager
def _decoding(path: Path, max_pixels: int | None) -> Iterator[None]:
    """Turn every decoder failure, and Pillow's own bomb guard, into UnreadableImageError.

    warnings.catch_warnings() swaps process-wide filters and is not thread-safe before Python
    3.14; a race can leave one thread's DecompressionBombWarning filter in force for another, but
    cannot bypass our own explicit pixel check.
    """
    with warnings.catch_warnings():
        # Pillow warns above Image.MAX_IMAGE_PIXELS at open(), before we can read the size. When our
        # limit is at or below Pillow's, that warning already means "over our limit"; when the
        # caller raised the limit above Pillow's, our explicit check below is the one that decides.
        # Pillow's hard error at 2 × MAX_IMAGE_PIXELS always applies.
        if max_pixels is not None and max_pixels <= Image.MAX_IMAGE_PIXELS:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        else:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except UnreadableImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UnreadableImageError(path, f"decompression bomb guard: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise UnreadableImageError(path, "not a recognised image format") from exc
        except _DECODE_ERRORS as exc:
            raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from exc


def _check_file(path: Path) -> None:
    """Missing paths are the caller's error; empty files are a property of the image.

    Checked before any open(): opening a FIFO would wait for a writer forever.
    """
    st = path.stat()  # FileNotFoundError propagates as it is
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImageError(path, "not a regular file")
    if st.st_size == 0:
        raise UnreadableImageError(path, "empty file (0 bytes)")


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise UnreadableImageError(
            path, f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}"
        )


def _validate_max_pixels(max_pixels: int | None) -> None:
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0
    ):
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")


def _orientation(im: Image.Image) -> int:
    """EXIF orientation without decoding pixels (PNG's getexif() would load the whole image)."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        # A broken EXIF block must not make a decodable photo unreadable; show it as stored.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def read_header(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Width, height (as displayed, EXIF orientation applied) and format, without decoding pixels.

    Raises UnreadableImageError for empty, non-image or over-limit files; a damaged pixel stream
    behind an intact header is only found by `verify_decodable` or `load_rgb`.
    """
    _validate_max_pixels(max_pixels)
    path = Path(path)
    heif_available()
    _check_file(path)
    with _decoding(path, max_pixels), Image.open(path) as im:
        width, height = im.size
        _check_pixels(path, width, height, max_pixels)
        if _orientation(im) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        return ImageHeader(width, height, im.format or "UNKNOWN")


def verify_decodable(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Prove the whole pixel stream is present and decodes, as cheaply as the format allows.

    JPEG decodes at 1/8 scale (libjpeg's DCT scaling still reads every entropy-coded byte, so a
    truncated file fails); PNG checks every chunk CRC up to IEND without inflating; other formats
    fully decode. Raises UnreadableImageError.
    """
    _validate_max_pixels(max_pixels)
    path = Path(path)
    heif_available()
    _check_file(path)
    with _decoding(path, max_pixels), Image.open(path) as im:
        _check_pixels(path, im.width, im.height, max_pixels)
        if im.format == "PNG":
            im.verify()
            return
        if im.format in {"JPEG", "MPO"}:  # MPO: phones' multi-picture JPEG, same decoder
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
        im.load()


def _normalised_exif(raw: bytes | None) -> bytes | None:
    """EXIF bytes with Orientation = 1 (pixels already carry the rotation); None when unparseable."""
    if not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        if ORIENTATION_TAG in exif:
            exif[ORIENTATION_TAG] = 1
        return exif.tobytes()
    except _DECODE_ERRORS as exc:
        # Dropping a corrupt EXIF block is better than writing it into every derived image.
        logger.warning("dropping unparseable EXIF block (%s: %s)", type(exc).__name__, exc)
        return None


def _icc_colour_space(profile: bytes | None) -> bytes | None:
    # ICC header: bytes 16..20 hold the data colour space signature ("RGB ", "GRAY", "CMYK").
    if not profile or len(profile) < 128:
        return None
    return profile[16:20]


def _rgb_icc(profile: bytes | None) -> bytes | None:
    """Keep a profile only if it can describe RGB pixels; a GRAY/CMYK profile on RGB is invalid."""
    return profile if _icc_colour_space(profile) == b"RGB " else None


def _over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit_to_rgb(im: Image.Image) -> Image.Image:
    """Scale 16/32-bit greyscale to 8 bit by value range (65535 → 255, 32768 → 128), not clip."""
    values = np.asarray(im).astype(np.float64)
    if im.mode in _SIXTEEN_BIT_MODES:
        full_scale = 65535.0
    else:
        # "I"/"F": 16-bit PNGs decode as "I" on older Pillow; true 32-bit data is scaled by its
        # own maximum so it is not all white.
        peak = float(values.max()) if values.size else 0.0
        full_scale = 65535.0 if peak <= 65535.0 else peak
        if im.mode == "F" and peak <= 1.0:
            full_scale = 1.0
    grey = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), mode="RGB")


def _cmyk_to_rgb(path: Path, im: Image.Image, icc: bytes | None) -> Image.Image:
    if _icc_colour_space(icc) == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))  # type: ignore[arg-type]
            target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            converted = ImageCms.profileToProfile(im, source, target, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            logger.warning("%s: CMYK ICC conversion failed (%s); using naive CMYK → RGB", path, exc)
    return im.convert("RGB")


def _to_rgb(path: Path, im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bool, bytes | None]:
    """Any Pillow mode → RGB; returns (image, had_alpha, icc profile valid for the result)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im, False, _rgb_icc(icc)
    if mode in _ALPHA_MODES or "transparency" in im.info:
        # Over white, not black: most album viewers show transparent areas as paper-white.
        return _over_white(im), True, _rgb_icc(icc)
    if mode == "CMYK":
        # After an ICC conversion the pixels are sRGB, for which "no profile" is the convention.
        return _cmyk_to_rgb(path, im, icc), False, None
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        return _sixteen_bit_to_rgb(im), False, None
    # "1", "L", "P", "YCbCr", "LAB", "HSV": Pillow's own conversions are correct for these.
    return im.convert("RGB"), False, _rgb_icc(icc)


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode in _SIXTEEN_BIT_MODES:
        return 16
    if mode in {"I", "F"}:
        return 32
    return 8


def load_rgb(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
             data: bytes | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Decode a photo as displayed: EXIF orientation applied, any colour mode → RGB, alpha over white.

    Returns (rgb, meta) with rgb of shape (H, W, 3), dtype uint8, C-contiguous. The pixel limit is
    checked from the header before any decoding. Raises UnreadableImageError for anything that is
    not a complete, decodable image within the limit; FileNotFoundError for a missing path.
    Truncation is only detected while PIL.ImageFile.LOAD_TRUNCATED_IMAGES is off (Pillow's default,
    a process-wide switch this module never sets). ``data``: decode these bytes, already read from ``path``.
    """
    _validate_max_pixels(max_pixels)
    path = Path(path)
    heif_available()
    if data is None:
        _check_file(path)
    elif not data:
        raise UnreadableImageError(path, "empty file (0 bytes)")
    with _decoding(path, max_pixels), Image.open(path if data is None else io.BytesIO(data)) as im:
        _check_pixels(path, im.width, im.height, max_pixels)
        fmt = im.format or "UNKNOWN"
        mode = im.mode
        icc = im.info.get("icc_profile") or None
        im.load()
        orientation = _orientation(im)
        # TIFF tags come back through getexif() too; only a real EXIF blob is carried onwards, so
        # TIFF structure tags never leak into a JPEG's APP1 segment.
        exif = _normalised_exif(im.info.get("exif"))
        oriented = ImageOps.exif_transpose(im)
        rgb_image, had_alpha, out_icc = _to_rgb(path, oriented, icc)
        rgb = np.ascontiguousarray(np.asarray(rgb_image, dtype=np.uint8))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise UnreadableImageError(path, f"decoded to unexpected shape {rgb.shape}")
    height, width = rgb.shape[:2]
    meta = ImageMeta(format=fmt, mode=mode, width=width, height=height, exif=exif, icc_profile=out_icc,
                     had_alpha=had_alpha, bit_depth=_bit_depth(mode), orientation=orientation)
    return rgb, meta


def _resolve_format(path: Path, format: str | None) -> str:
    if format is not None:
        if not isinstance(format, str) or not format.strip():
            raise ValueError(f"format must be a non-empty string or None, got {format!r}")
        name = format.strip().upper()
        name = _FORMAT_ALIASES.get(name, name)
    else:
        name = Image.registered_extensions().get(path.suffix.lower(), "")
        if not name:
            raise ValueError(f"cannot infer an image format from the extension of {str(path)!r}")
    Image.init()
    if name not in Image.SAVE:
        raise ValueError(f"Pillow cannot write format {name!r} (for {str(path)!r})")
    return name


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (symlinks, hard links and case-insensitive file systems included)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links and case-insensitive file systems
    except OSError:
        return False


def _save_params(fmt: str, meta: ImageMeta | None, quality: int) -> dict[str, object]:
    params: dict[str, object] = {}
    if fmt in {"JPEG", "WEBP"}:
        params["quality"] = quality
    if fmt == "JPEG" and quality >= 90:
        # 4:4:4 chroma: a super-resolved output's whole point is fine detail, colour edges included.
        params["subsampling"] = 0
    if meta is not None and fmt in _METADATA_FORMATS:
        exif = _normalised_exif(meta.exif)
        if exif:
            params["exif"] = exif
        icc = _rgb_icc(meta.icc_profile)
        if icc:
            params["icc_profile"] = icc
    return params


def save_atomic(
    path: PathLike,
    rgb: np.ndarray,
    meta: ImageMeta | None = None,
    format: str | None = None,
    quality: int = 95,
    *,
    protected: Collection[PathLike] = (),
    stamp: Stamp | None = None,
) -> Path:
    """Write rgb (H, W, 3) uint8 to path so that readers see the old file or the whole new one.

    Encodes into a hidden temp file beside it and renames that over the target
    (durable.files.atomic_write). EXIF (orientation 1) and an RGB ICC profile from meta are kept
    for JPEG, PNG, WebP and TIFF. Refuses (ValueError) to write onto any path in `protected` (the
    album's inputs). A `stamp` adds save arguments (XMP) and rewrites the bytes (C2PA) before the rename.
    """
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb must be (H, W, 3) uint8 and non-empty, got {rgb.shape} {rgb.dtype}")
    if meta is not None and not isinstance(meta, ImageMeta):
        raise TypeError(f"meta must be ImageMeta or None, got {type(meta).__name__}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    if isinstance(protected, (str, os.PathLike)):
        # A bare string would otherwise be iterated character by character.
        protected = (protected,)
    target = Path(path)
    for guarded in protected:
        if same_file(target, Path(guarded)):
            raise ValueError(f"refusing to overwrite input image {str(target)!r}")
    fmt = _resolve_format(target, format)
    params = _save_params(fmt, meta, quality)
    params.update(stamp.save_params(fmt, params.get("exif")) if stamp is not None else {})  # type: ignore[arg-type]
    image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")

    def encode(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            image.save(handle, format=fmt, **params)
        if stamp is not None:
            tmp.write_bytes(stamp.finish(tmp.read_bytes(), fmt))

    atomic_write(target, encode)
    logger.debug("wrote %s (%s, %dx%d)", target, fmt, rgb.shape[1], rgb.shape[0])
    return target


def shrink(
    rgb: np.ndarray, long_side: int, resample: Image.Resampling = Image.Resampling.LANCZOS, reducing_gap: float = 3.0
) -> np.ndarray:
    """(H, W, 3) uint8 reduced so that its long side is at most ``long_side``; never enlarged.

    Pillow first shrinks by a whole factor with a box filter while the image stays ``reducing_gap``
    times larger than the target, then applies ``resample``: fast, and as sharp as the final filter.
    LANCZOS (the default) for what people or the network look at; BOX with gap 2 is an area average,
    the right anti-aliasing for descriptors of a much larger photo.
    """
    h, w = rgb.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, resample, reducing_gap=reducing_gap))
