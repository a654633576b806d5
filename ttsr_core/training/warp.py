"""Reference views with known geometry: homographies, rendering, and lv3 ground-truth correspondences.

A training reference is another view of the photo the target crop was cut from: a perspective warp
(scale, rotation, tilt) around a point near the target, rendered from the photo with PIL. Because the
warp is known, every lv3 cell of the target knows which reference cell shows the same place, which is
what correspondence learning (``ttsr_core.training.correspondence``) and the matching-accuracy metric need.

Coordinates are continuous pixel coordinates, as PIL's transforms use them: pixel (row r, col c) covers
[c, c+1) × [r, r+1) and its centre is (c + 0.5, r + 0.5). Homographies are 3×3 arrays mapping
(x, y, 1) column vectors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ttsr_core.config import SCALE


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3×3 homography H with H·src[i] ∝ dst[i] for 4 (x, y) point pairs (direct linear transform)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != (4, 2) or dst.shape != (4, 2):
        raise ValueError(f"need 4 (x, y) points each, got {src.shape} and {dst.shape}")
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows), np.array(rhs))
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) x/y points → (..., 2) mapped points (NaN where a point maps to infinity)."""
    pts = np.asarray(points, dtype=np.float64)
    flat = pts.reshape(-1, 2)
    hom = flat @ h[:, :2].T + h[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / hom[:, 2:3]
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out.reshape(pts.shape)


def render(photo: np.ndarray, ref_to_photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The (height, width) = ``size`` view whose pixel p shows photo point ref_to_photo(p), bicubic."""
    h = ref_to_photo / ref_to_photo[2, 2]
    coeffs = (h[0, 0], h[0, 1], h[0, 2], h[1, 0], h[1, 1], h[1, 2], h[2, 0], h[2, 1])
    out = Image.fromarray(photo).transform((size[1], size[0]), Image.Transform.PERSPECTIVE, coeffs,
                                           resample=Image.Resampling.BICUBIC)
    return np.asarray(out)


def cell_centres(rows: int, cols: int, origin: tuple[float, float] = (0.0, 0.0), cell: int = SCALE) -> np.ndarray:
    """(rows, cols, 2) x/y centres of the lv3 cells of an image placed at ``origin`` (x, y)."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return np.stack([origin[0] + cell * xx + cell / 2, origin[1] + cell * yy + cell / 2], axis=-1)


def correspondences(target_to_ref: np.ndarray, target_cells: tuple[int, int], ref_cells: tuple[int, int],
                    cell: int = SCALE) -> np.ndarray:
    """Ground truth: (h, w, 2) int64 (row, col) of the reference lv3 cell under each target lv3 cell's centre.

    target_to_ref maps target pixel coordinates to reference pixel coordinates; cells whose centre
    lands outside the reference get (-1, -1).
    """
    h, w = target_cells
    hk, wk = ref_cells
    pts = apply_homography(target_to_ref, cell_centres(h, w, cell=cell))
    col, row = np.floor(pts[..., 0] / cell), np.floor(pts[..., 1] / cell)
    ok = np.isfinite(pts).all(axis=-1) & (row >= 0) & (row < hk) & (col >= 0) & (col < wk)
    out = np.full((h, w, 2), -1, dtype=np.int64)
    out[ok, 0], out[ok, 1] = row[ok], col[ok]
    return out


@dataclass(frozen=True)
class ViewSettings:
    """How far a reference view may differ from the target crop's own view.

    ``zoom`` is the reference's magnification: an object ``zoom`` times as many pixels wide in the
    reference as in the HR target. ``tilt`` moves each corner by up to this fraction of the side
    (perspective). ``offset`` moves the view's centre away from the target's by up to this fraction
    of their summed half-sides, so the reference may cover only part of the target.
    """

    zoom: tuple[float, float] = (0.5, 2.0)
    rotation_deg: float = 30.0
    tilt: float = 0.15
    offset: float = 0.6

    def __post_init__(self) -> None:
        lo, hi = self.zoom
        if not 0 < lo <= hi:
            raise ValueError(f"zoom must be (low, high) with 0 < low ≤ high, got {self.zoom!r}")
        if not 0 <= self.tilt < 0.5 or not 0 <= self.offset <= 1 or not 0 <= self.rotation_deg <= 180:
            raise ValueError(f"need 0 ≤ tilt < 0.5, 0 ≤ offset ≤ 1, 0 ≤ rotation ≤ 180, got {self}")


# Near views (a burst, a stereo pair) and far ones (another visit, another lens), sampled half and half.
NEAR_VIEW = ViewSettings(zoom=(0.8, 1.25), rotation_deg=8.0, tilt=0.05, offset=0.3)
FAR_VIEW = ViewSettings()


def sample_view(rng: np.random.Generator, settings: ViewSettings, centre: tuple[float, float], target_side: int,
                ref_side: int, photo_shape: tuple[int, int], tries: int = 20) -> np.ndarray | None:
    """A ref→photo homography for a ``ref_side``² view around ``centre`` (x, y) that stays inside the photo.

    None when no sampled view fits (the photo is too small for that zoom): the caller falls back.
    """
    ph, pw = photo_shape
    lo, hi = math.log(settings.zoom[0]), math.log(settings.zoom[1])
    for _ in range(tries):
        zoom = math.exp(rng.uniform(lo, hi))
        span = ref_side / zoom  # photo pixels across the view
        angle = math.radians(rng.uniform(-settings.rotation_deg, settings.rotation_deg))
        reach = settings.offset * (target_side + span) / 2
        dx, dy = rng.uniform(-reach, reach, 2)
        cx, cy = centre[0] + dx, centre[1] + dy
        c, s = math.cos(angle), math.sin(angle)
        square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * span / 2
        corners = square @ np.array([[c, s], [-s, c]]) + (cx, cy)
        corners += rng.uniform(-settings.tilt, settings.tilt, (4, 2)) * span
        if corners[:, 0].min() < 0 or corners[:, 1].min() < 0 or corners[:, 0].max() > pw or corners[:, 1].max() > ph:
            continue
        src = np.array([[0, 0], [ref_side, 0], [ref_side, ref_side], [0, ref_side]], dtype=np.float64)
        return homography_from_points(src, corners)
    return None


def photo_units_per_pixel(h: np.ndarray, side: int) -> float:
    """How many photo pixels one view pixel spans near the view's centre (> 1: the view shrinks the photo)."""
    c = np.array([[side / 2, side / 2], [side / 2 + 1, side / 2], [side / 2, side / 2 + 1]])
    p = apply_homography(h, c)
    (ax, ay), (bx, by) = p[1] - p[0], p[2] - p[0]
    return float(math.sqrt(abs(ax * by - ay * bx)))
