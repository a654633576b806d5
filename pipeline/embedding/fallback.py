"""Download-free embedders: the multi-scale fallback descriptor, and a histogram baseline for benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.embedding.base import check_images, l2_normalise
from pipeline.images import shrink


@dataclass(frozen=True)
class FallbackSettings:
    """Working resolution of the fallback descriptor."""

    work_size: int = 256  # long side every photo is reduced to before describing it

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise ValueError(f"work_size must be >= 32, got {self.work_size}")


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """float32 hxwx3 sRGB in [0, 1] -> CIE Lab (D65), L in [0, 100]."""
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]], dtype=np.float32)
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def _soft_index(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear (triangular) bin assignment: a small colour or angle shift moves mass, not a whole count."""
    pos = (np.clip(values, lo, hi) - lo) / (hi - lo) * bins - 0.5
    i0 = np.floor(pos)
    w1 = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0, 0, bins - 1), np.clip(i0 + 1, 0, bins - 1), w1


def _grid_hist(cells_of: np.ndarray, bins_of: tuple[np.ndarray, ...], weights: tuple[np.ndarray, ...],
               n_cells: int, n_bins: int) -> np.ndarray:
    """Sum `weights` into (n_cells, n_bins) at the given (cell, bin) indices."""
    hist = np.zeros(n_cells * n_bins, dtype=np.float64)
    for b, w in zip(bins_of, weights):
        hist += np.bincount((cells_of * n_bins + b).ravel(), weights=w.ravel(), minlength=n_cells * n_bins)
    return hist.reshape(n_cells, n_bins)


def _cell_index(h: int, w: int, g: int) -> np.ndarray:
    rows = np.minimum(np.arange(h) * g // h, g - 1)
    cols = np.minimum(np.arange(w) * g // w, g - 1)
    return rows[:, None] * g + cols[None, :]  # (h, w) cell id in a g x g grid


def _pyramid(cell_hists: dict[int, np.ndarray]) -> np.ndarray:
    """Per-level: each cell histogram normalised to unit mass, then signed sqrt (Hellinger)."""
    parts = []
    for g in sorted(cell_hists):
        h = cell_hists[g]
        h = h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)
        parts.append(np.sqrt(h).ravel() / np.sqrt(g * g))  # each level has the same weight
    return np.concatenate(parts)


class FallbackEmbedder:
    """Multi-scale hand-made descriptor for "same scene, other viewpoint" retrieval; no download.

    What it captures, each block L2-normalised, weighted, then the whole L2-normalised:
      * colour layout: soft Lab histograms (L 4 x a 6 x b 6 bins) over a 1x1 + 2x2 spatial
        pyramid, Hellinger-normalised — robust to small shifts, crops and exposure changes;
      * structure: magnitude-weighted, soft-binned gradient-orientation histograms (9 unsigned
        bins, HOG-like) on 1x1 / 2x2 / 4x4 grids at two scales — what the scene is made of
        (edges, textures, their directions) independently of exact pixel positions;
      * coarse layout: an 8x8 mean-removed luminance thumbnail.
    Photos are first reduced to `work_size` on the long side, so a low-resolution query and a
    high-resolution candidate are described at the same scale. Pure numpy, deterministic.
    What it does not capture: semantics (two different beaches look alike to it), large
    viewpoint or lighting changes, rotations beyond a few degrees.
    """

    VERSION = "v1"
    _LAB_BINS = (4, 6, 6)
    _ORI_BINS = 9
    _THUMB = 8
    # Block weights, chosen on the retrieval benchmark (benchmarks/retrieval/retrieval_recall.py).
    _W_COLOUR, _W_GRAD, _W_THUMB = 1.0, 1.0, 0.5

    def __init__(self, settings: FallbackSettings = FallbackSettings()) -> None:
        self.settings = settings
        n_colour = int(np.prod(self._LAB_BINS)) * (1 + 4)
        n_grad = 2 * self._ORI_BINS * (1 + 4 + 16)
        self.key = f"fallback:{self.VERSION}"
        self.dim = n_colour + n_grad + self._THUMB * self._THUMB

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, dim), rows L2-normalised."""
        check_images(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            out[i] = self._describe(im)
        return out

    def _colour(self, rgb: np.ndarray) -> np.ndarray:
        lab = _srgb_to_lab(rgb)
        nl, na, nb = self._LAB_BINS
        l0, l1, lw = _soft_index(lab[..., 0], 0.0, 100.0, nl)
        a0, a1, aw = _soft_index(lab[..., 1], -60.0, 60.0, na)
        b0, b1, bw = _soft_index(lab[..., 2], -60.0, 60.0, nb)
        bins, weights = [], []
        for li, lw_ in ((l0, 1 - lw), (l1, lw)):
            for ai, aw_ in ((a0, 1 - aw), (a1, aw)):
                for bi, bw_ in ((b0, 1 - bw), (b1, bw)):
                    bins.append((li * na + ai) * nb + bi)
                    weights.append(lw_ * aw_ * bw_)
        h, w = rgb.shape[:2]
        hists = {g: _grid_hist(_cell_index(h, w, g), tuple(bins), tuple(weights), g * g, nl * na * nb)
                 for g in (1, 2)}
        return _pyramid(hists)

    def _gradients(self, lum: np.ndarray) -> np.ndarray:
        h, w = lum.shape
        gy = np.zeros_like(lum)
        gx = np.zeros_like(lum)
        gy[1:-1] = lum[2:] - lum[:-2]
        gx[:, 1:-1] = lum[:, 2:] - lum[:, :-2]
        mag = np.hypot(gx, gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: a contrast flip keeps the edge
        # Circular soft binning: 0 and pi are the same orientation, so neighbours wrap around.
        pos = ang / np.pi * self._ORI_BINS - 0.5
        base = np.floor(pos).astype(np.int64)
        i0 = np.mod(base, self._ORI_BINS)
        i1 = np.mod(base + 1, self._ORI_BINS)
        w1 = (pos - base).astype(np.float32)
        # sqrt of magnitude: strong edges still count more, but one high-contrast border can't dominate.
        m = np.sqrt(mag)
        hists = {g: _grid_hist(_cell_index(h, w, g), (i0, i1), (m * (1 - w1), m * w1), g * g, self._ORI_BINS)
                 for g in (1, 2, 4)}
        return _pyramid(hists)

    def _thumb(self, lum: np.ndarray) -> np.ndarray:
        t = np.asarray(Image.fromarray(lum).resize((self._THUMB, self._THUMB), Image.Resampling.BOX),
                       dtype=np.float32)
        t = t - t.mean()
        return t.ravel()

    def _describe(self, image: np.ndarray) -> np.ndarray:
        # An area average to the working size; a low-resolution query and a high-resolution
        # candidate are then described at the same scale.
        small = shrink(image, self.settings.work_size, Image.Resampling.BOX, 2.0)
        rgb = small.astype(np.float32) / 255.0  # (h, w, 3) in [0, 1]
        lum = (rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
        half = np.asarray(Image.fromarray(lum).resize(
            (max(1, lum.shape[1] // 2), max(1, lum.shape[0] // 2)), Image.Resampling.BOX), dtype=np.float32)
        blocks = (
            (self._W_COLOUR, self._colour(rgb)),
            (self._W_GRAD, np.concatenate([self._gradients(lum), self._gradients(half)])),
            (self._W_THUMB, self._thumb(lum)),
        )
        vec = np.concatenate([w * l2_normalise(b.astype(np.float32)) for w, b in blocks])
        return l2_normalise(vec)


class ColorHistogramEmbedder:
    """Baseline for the benchmark only: one global RGB histogram (`bins`^3), L2-normalised."""

    def __init__(self, bins: int = 8) -> None:
        if bins < 2:
            raise ValueError(f"bins must be >= 2, got {bins}")
        self.bins = bins
        self.key = f"colorhist:rgb{bins}"
        self.dim = bins**3

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) uint8 HxWx3 images -> float32 (N, bins^3), rows L2-normalised."""
        check_images(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, im in enumerate(images):
            q = (im.reshape(-1, 3).astype(np.int64) * self.bins) // 256  # (H*W, 3) bin per channel
            idx = (q[:, 0] * self.bins + q[:, 1]) * self.bins + q[:, 2]
            out[i] = np.bincount(idx, minlength=self.dim).astype(np.float32)
        return l2_normalise(out)

