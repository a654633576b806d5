"""Generated, seeded image fixtures for the pipeline tests (no files from outside the test)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _quadrants(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: top-left red, top-right green, bottom-left blue, bottom-right white."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    h2, w2 = height // 2, width // 2
    rgb[:h2, :w2] = (255, 0, 0)
    rgb[:h2, w2:] = (0, 255, 0)
    rgb[h2:, :w2] = (0, 0, 255)
    rgb[h2:, w2:] = (255, 255, 255)
    return rgb


@pytest.fixture
def quadrants() -> Callable[[int, int], np.ndarray]:
    return _quadrants


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """write_image(path, image_or_array, format=None, orientation=None, **save_params) -> path."""

    def _write(
        path: Path,
        image: Image.Image | np.ndarray,
        format: str | None = None,
        orientation: int | None = None,
        **params: object,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        if orientation is not None:
            exif = Image.Exif()
            exif[0x0112] = orientation
            exif[0x010F] = "Acme Camera"  # Make: proves the rest of the EXIF block survives
            params["exif"] = exif.tobytes()
        im.save(path, format=format, **params)
        return path

    return _write


@pytest.fixture
def photo(write_image: Callable[..., Path]) -> Callable[..., Path]:
    """photo(path, width, height, color=(r,g,b), orientation=None) -> a flat-colour JPEG (fast to encode)."""

    def _photo(
        path: Path,
        width: int,
        height: int,
        color: tuple[int, int, int] = (120, 90, 60),
        orientation: int | None = None,
    ) -> Path:
        fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        return write_image(path, Image.new("RGB", (width, height), color), fmt, orientation)

    return _photo


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose IHDR claims width × height: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def bomb_png() -> Callable[[int, int], bytes]:
    return png_with_declared_size


@pytest.fixture
def truncated_jpeg(rng: np.random.Generator) -> bytes:
    """A noisy JPEG cut in half: the header parses, the entropy-coded data ends early."""
    noise = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]
