"""Where a small picture sits inside a larger one: the scale and shift found by normalised cross-correlation.

Features fail on a thumbnail of a few dozen pixels: its keypoints live at scales the larger photo
barely has, and a handful of them match. The pixels still say where it came from. The small
picture, reduced to a working size, is slid over the larger one resampled at each candidate scale
(``cv2.matchTemplate``, zero-mean normalised, so a gain or offset of the colours does not matter);
the best score's scale and shift, refined to a fraction of a step and of a pixel, give the map.
The map says only where the picture would be; whether it *is* that picture is for the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Placement:
    """`small_to_large`: 3×3, small-picture pixels → large-picture pixels (a scale per axis and a shift)."""

    score: float  # the normalised cross-correlation at the best place, in [-1, 1]
    small_to_large: np.ndarray


def _subpixel(m: float, c: float, p: float) -> float:
    """The offset of a parabola's top through three neighbouring values (m, c, p), c the largest."""
    curve = m - 2.0 * c + p
    return 0.0 if curve >= 0 else float(np.clip(0.5 * (m - p) / curve, -0.5, 0.5))


def _peak(scores: np.ndarray) -> tuple[float, float, float]:
    """(best score, x, y) of a score map, x and y refined by a parabola through the neighbours."""
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    h, w = scores.shape
    dx = _subpixel(scores[y, x - 1], best, scores[y, x + 1]) if 0 < x < w - 1 else 0.0
    dy = _subpixel(scores[y - 1, x], best, scores[y + 1, x]) if 0 < y < h - 1 else 0.0
    return float(best), x + dx, y + dy


def _score_at(large: np.ndarray, small: np.ndarray, scale: float) -> tuple[float, np.ndarray]:
    """The best place of `small` in `large` reduced by `scale` (large pixels per small pixel), and its map."""
    (lh, lw), (sh, sw) = large.shape, small.shape
    # One scale for both axes (a copy is not stretched): rounded by the long side, which rounds least.
    if lw >= lh:
        rw = max(sw, round(lw / scale))
        rh = max(sh, round(lh * rw / lw))
    else:
        rh = max(sh, round(lh / scale))
        rw = max(sw, round(lw * rh / lh))
    reduced = cv2.resize(large, (rw, rh), interpolation=cv2.INTER_AREA)
    score, x0, y0 = _peak(cv2.matchTemplate(reduced, small, cv2.TM_CCOEFF_NORMED))
    fx, fy = lw / rw, lh / rh
    # Small pixel u sits on reduced pixel u + x0; reduced → large puts centres onto centres.
    return score, np.array([[fx, 0.0, x0 * fx + 0.5 * fx - 0.5], [0.0, fy, y0 * fy + 0.5 * fy - 0.5],
                            [0.0, 0.0, 1.0]])


def place(small_rgb: np.ndarray, large_rgb: np.ndarray, *, min_scale: float, min_share: float,
          work_side: int = 96, step: float = 1.02) -> Placement | None:
    """Where `small_rgb` best sits inside `large_rgb` ((H, W, 3) uint8 each), or None when it cannot fit.

    Tried at every scale (large pixels per small pixel) from the one where the small picture's
    frame just fits inside the large one down to `min_share` of that (a crop showing at least that
    share of the large picture along its tighter side), and never below `min_scale`; in geometric
    steps of `step`, then in quarter steps up to ¾ of a step either side of the best (one scale for
    both axes: a copy is not stretched). The small picture is first
    reduced to `work_side` on its long side (the search costs the same for any size of copy).
    """
    small = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    large = cv2.cvtColor(large_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (sh, sw), (lh, lw) = small.shape, large.shape
    work = min(1.0, work_side / max(sh, sw))
    if work < 1.0:
        small = cv2.resize(small, (max(8, round(sw * work)), max(8, round(sh * work))), interpolation=cv2.INTER_AREA)
    wh, ww = small.shape
    fits = min(lw / ww, lh / wh)  # the scale at which the small frame just fits inside the large one
    lowest = max(fits * min_share, min_scale * sw / ww)  # min_scale is per pixel of the small picture as given
    if lowest > fits:
        return None
    # The large picture reduced once to four times the resolution the finest scale needs: each scale's
    # resampling then starts from fewer pixels (a 4000-px original costs what a small one does) and
    # still reduces by at least four, so the two reductions blur about as one would.
    pre = max(1.0, lowest / 4.0)
    if pre > 1.0:
        large = cv2.resize(large, (max(ww, round(lw / pre)), max(wh, round(lh / pre))), interpolation=cv2.INTER_AREA)
    pre_x, pre_y = lw / large.shape[1], lh / large.shape[0]
    count = int(math.log(fits / lowest) / math.log(step)) + 1
    scales = sorted({min(fits, lowest * step ** i) for i in range(count + 1)})
    tried = [(*_score_at(large, small, s / pre), s) for s in scales]
    best = max(tried, key=lambda t: t[0])
    finer = [min(fits, best[2] * step ** (k / 4)) for k in (-3, -2, -1, 1, 2, 3)]
    best = max([best] + [(*_score_at(large, small, s / pre), s) for s in finer], key=lambda t: t[0])
    score, work_to_reduced = best[0], best[1]
    reduced_to_large = np.array([[pre_x, 0.0, 0.5 * pre_x - 0.5], [0.0, pre_y, 0.5 * pre_y - 0.5], [0.0, 0.0, 1.0]])
    kx, ky = ww / sw, wh / sh
    small_to_work = np.array([[kx, 0.0, 0.5 * kx - 0.5], [0.0, ky, 0.5 * ky - 0.5], [0.0, 0.0, 1.0]])
    return Placement(score, reduced_to_large @ work_to_reduced @ small_to_work)
