"""Y-channel PSNR and SSIM with a border crop: the C2-Matching / DATSR evaluation protocol."""
from __future__ import annotations

import numpy as np


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma in [16, 235] from uint8 RGB, as MATLAB's rgb2ycbcr (float64)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    x = image.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _crop(a: np.ndarray, border: int) -> np.ndarray:
    if border == 0:
        return a
    if a.shape[0] <= 2 * border or a.shape[1] <= 2 * border:
        raise ValueError(f"image {a.shape[:2]} too small for a {border}-pixel border crop")
    return a[border:-border, border:-border]


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    """PSNR (dB) on the Y channel of two uint8 RGB images, ``border`` pixels cropped on each side."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    ya, yb = _crop(rgb_to_y(a), border), _crop(rgb_to_y(b), border)
    mse = float(np.mean((ya - yb) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size) - size // 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """'valid' 2-D correlation with a small window (no SciPy dependency)."""
    k = w.shape[0]
    h, wd = x.shape[0] - k + 1, x.shape[1] - k + 1
    out = np.zeros((h, wd))
    for i in range(k):
        for j in range(k):
            out += w[i, j] * x[i : i + h, j : j + wd]
    return out


def ssim_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    """SSIM (Wang et al. 2004: 11×11 Gaussian σ=1.5, K1=0.01, K2=0.03, L=255) on the Y channel."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    x, y = _crop(rgb_to_y(a), border), _crop(rgb_to_y(b), border)
    if min(x.shape) < 11:
        raise ValueError(f"image {x.shape} too small for an 11×11 SSIM window")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _gaussian_window()
    mx, my = _filter_valid(x, w), _filter_valid(y, w)
    sxx = _filter_valid(x * x, w) - mx**2
    syy = _filter_valid(y * y, w) - my**2
    sxy = _filter_valid(x * y, w) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())
