"""Pictures of soft attention: where it peaks, a heat overlay on the target, a layer to lay over the output."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ttsr_core.metrics import luma

# Piecewise-linear approximation of matplotlib's "inferno": dark = low attention, yellow = high.
_INFERNO = (
    (0.0, (0, 0, 4)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)


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


def transfer_weight(soft: np.ndarray, enhanced: np.ndarray, bicubic: np.ndarray) -> np.ndarray:
    """Where transferred texture shows, per LR position: soft attention × the detail the output added.

    soft (h, w); enhanced and bicubic (H, W, 3) at the output's size → (h, w) float64. Soft attention
    alone peaks wherever matching is easy (flat sky matches flat sky): the crops would show nothing.
    The mean |enhanced − bicubic| luma over each position's output block is where the model changed
    the picture; their product is where it changed it with texture it trusted.
    """
    h, w = soft.shape
    added = np.abs(luma(enhanced) - luma(bicubic))  # (H, W)
    per_cell = np.asarray(Image.fromarray(added, mode="F").resize((w, h), Image.Resampling.BOX), dtype=np.float64)
    return np.clip(soft.astype(np.float64), 0.0, None) * per_cell


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to inferno-like RGB uint8 (..., 3)."""
    stops = np.array([s for s, _ in _INFERNO])
    colours = np.array([c for _, c in _INFERNO], dtype=np.float64)
    v = np.clip(values, 0.0, 1.0)
    out = np.stack([np.interp(v, stops, colours[:, ch]) for ch in range(3)], axis=-1)
    return np.round(out).astype(np.uint8)


def _stretched(soft: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float]:
    """The map normalised to its own min..max and stretched to (height, width); with that min and max."""
    lo, hi = float(soft.min()), float(soft.max())
    norm = (soft - lo) / (hi - lo) if hi > lo else np.zeros_like(soft)
    # Bilinear on the float map: the LR grid is coarse, nearest would draw blocks.
    stretched = np.asarray(
        Image.fromarray(norm.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    )
    return np.clip(stretched, 0.0, 1.0), lo, hi


def heat_layer(soft: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float]:
    """The soft map (h, w) as an RGBA layer (height, width, 4) to lay over the output; min, max.

    Its alpha grows with attention, so where the model found little the output shows through;
    the page sets the layer's overall opacity (the reader's slider).
    """
    stretched, lo, hi = _stretched(soft, width, height)
    alpha = np.round(255.0 * (0.35 + 0.65 * stretched)).astype(np.uint8)[..., None]
    return np.concatenate([heat_colours(stretched), alpha], axis=-1), lo, hi


def heat_overlay(base: np.ndarray, soft: np.ndarray, alpha: float = 0.6) -> tuple[np.ndarray, float, float]:
    """Blend the soft map (h, w), stretched to base (H, W, 3), over a greyed base → (H, W, 3), min, max.

    The colours span the map's own min..max (returned, for the legend): a relative map, so two
    cards' colours are not comparable; their numbers are.
    """
    height, width = base.shape[:2]
    stretched, lo, hi = _stretched(soft, width, height)
    grey = luma(base)[..., None].repeat(3, axis=2) * 0.8 + 25.0
    # Opacity grows with attention, so the photo stays readable where the model found little.
    weight = alpha * (0.35 + 0.65 * np.clip(stretched, 0.0, 1.0))[..., None]
    blended = grey * (1.0 - weight) + heat_colours(stretched).astype(np.float32) * weight
    return np.clip(np.round(blended), 0, 255).astype(np.uint8), lo, hi

