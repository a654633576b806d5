"""Seeded generated scenes for the verification and copy tests: shapes with texture, and views of them."""

from __future__ import annotations

import cv2
import numpy as np


def scene(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """(height, width, 3) uint8: a textured backdrop with a hundred filled and outlined shapes, all seeded."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 16, width // 16, 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(100):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(6, 50))
        thick = -1 if rng.random() < 0.5 else int(rng.integers(1, 4))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + size, y + int(rng.integers(6, 50))), colour, thick)
        elif kind == 1:
            cv2.circle(img, (x, y), size // 2, colour, thick)
        else:
            cv2.line(img, (x, y), (x + int(rng.integers(-60, 60)), y + int(rng.integers(-60, 60))), colour, 2)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def view(img: np.ndarray, homography: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`img` seen through a 3×3 homography (source → view pixels), as a `size` = (w, h) photo."""
    return cv2.warpPerspective(img, homography, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def tilt(width: int, height: int, dx: float, dy: float, scale: float = 1.0) -> np.ndarray:
    """A homography that keeps the centre, pulls the corners by (dx, dy) of the size and zooms by `scale`."""
    src = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    dst = np.float32([[dx * width, dy * height], [width * (1 - dx), 0], [width, height],
                      [0, height * (1 - dy)]])
    centre = np.array([width / 2, height / 2], np.float32)
    dst = (dst - centre) * scale + centre
    return cv2.getPerspectiveTransform(src, dst)
