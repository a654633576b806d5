"""What geometric verification saw: the target and its chosen reference side by side, the inlier matches drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.images import save_atomic
from pipeline.matching.verification import Verification, local_features, verify_pair
from pipeline.params import VerifySettings

MATCH_HEIGHT = 200  # both photos are shown at this height
MAX_LINES = 60  # more lines than this hide the photos; an even sample of the inliers is drawn
GAP = 8  # pixels between the two photos


def _at_height(rgb: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """`rgb` resized to `height` rows, and the factor from its own pixels to the shown ones."""
    f = height / rgb.shape[0]
    size = (max(1, round(rgb.shape[1] * f)), height)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC), f


def draw_matches(target: np.ndarray, reference: np.ndarray, found: Verification,
                 target_scale: float, reference_scale: float) -> np.ndarray:
    """(MATCH_HEIGHT, w, 3) uint8: target left, reference right, a line per drawn inlier.

    `found.inlier_points` are in the photos reduced for features; `*_scale` = original pixels per
    reduced pixel (LocalFeatures.scale), which puts them back onto the full photos.
    """
    left, fa = _at_height(target, MATCH_HEIGHT)
    right, fb = _at_height(reference, MATCH_HEIGHT)
    canvas = np.full((MATCH_HEIGHT, left.shape[1] + GAP + right.shape[1], 3), 255, np.uint8)
    canvas[:, :left.shape[1]] = left
    canvas[:, left.shape[1] + GAP:] = right
    if found.inlier_points is None:
        return canvas
    pa, pb = found.inlier_points
    keep = np.linspace(0, len(pa) - 1, min(len(pa), MAX_LINES)).round().astype(int) if len(pa) else []
    hue = np.linspace(0, 179, max(1, len(keep)), endpoint=False).astype(np.uint8)
    colours = cv2.cvtColor(np.stack([hue, np.full_like(hue, 220), np.full_like(hue, 255)], -1)[None],
                           cv2.COLOR_HSV2RGB)[0]
    for i, colour in zip(keep, colours):
        # Reduced pixel centre → full pixel → shown pixel.
        xa, ya = ((pa[i] + 0.5) * target_scale) * fa
        xb, yb = ((pb[i] + 0.5) * reference_scale) * fb
        start, end = (round(xa), round(ya)), (round(xb) + left.shape[1] + GAP, round(yb))
        c = tuple(int(v) for v in colour)
        cv2.line(canvas, start, end, c, 1, cv2.LINE_AA)
        cv2.circle(canvas, start, 2, c, -1, cv2.LINE_AA)
        cv2.circle(canvas, end, 2, c, -1, cv2.LINE_AA)
    return canvas


def save_matches(target: np.ndarray, reference: np.ndarray, card_dir: Path, quality: int = 85) -> dict[str, Any]:
    """Verify the pair as retrieval does (default VerifySettings) and save the drawing; its meta entry."""
    settings = VerifySettings()
    a, b = local_features(target, settings), local_features(reference, settings)
    found = verify_pair(a, b, settings)
    save_atomic(card_dir / "matches.jpg", draw_matches(target, reference, found, a.scale, b.scale), format="JPEG",
                quality=quality)
    return {"file": "matches.jpg", "inliers": found.inliers, "matches": found.matches}
