"""Image measures: Y-PSNR/SSIM with a border crop (the C2-Matching/DATSR protocol), and no-reference detail gain.

The detail gain is for an album, which has no ground truth: it compares an output with the plain
bicubic upscale of its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ttsr_core.arrays import resize_bicubic


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


def luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 luma (0.299 R + 0.587 G + 0.114 B) of (H, W, 3) RGB → (H, W) float32."""
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR (dB) of two same-shaped arrays on a scale with the given peak; inf when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 4) -> float:
    """PSNR (dB) on the Y channel of two uint8 RGB images, ``border`` pixels cropped on each side."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return psnr(_crop(rgb_to_y(a), border), _crop(rgb_to_y(b), border))


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


def laplacian_energy(rgb: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of luma: a no-reference high-frequency measure. rgb (H, W, 3)."""
    y = luma(rgb)
    if y.shape[0] < 3 or y.shape[1] < 3:
        return 0.0
    lap = 4.0 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap.astype(np.float64) ** 2))


@dataclass(frozen=True)
class DetailGain:
    """No-reference comparison of an enhanced output with the plain bicubic upscale.

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


def lr_fidelity(up: np.ndarray, lr: np.ndarray) -> float:
    """Luma PSNR of ``up`` scaled back to ``lr``'s size against ``lr``; 99 dB stands for identical."""
    value = psnr(luma(resize_bicubic(up, lr.shape[1], lr.shape[0])), luma(lr))
    return 99.0 if math.isinf(value) else value  # JSON has no infinity


def detail_gain(lr: np.ndarray, enhanced: np.ndarray, bicubic: np.ndarray | None = None) -> DetailGain:
    """Compare the output (H, W, 3) with the bicubic upscale of lr (h, w, 3); see DetailGain."""
    height, width = enhanced.shape[:2]
    if bicubic is None:
        bicubic = resize_bicubic(lr, width, height)
    if bicubic.shape != enhanced.shape:
        raise ValueError(f"bicubic {bicubic.shape} and enhanced {enhanced.shape} must have the same shape")
    eps = 1e-6  # a flat image has zero energy; keep the ratio finite
    detail = 10.0 * math.log10((laplacian_energy(enhanced) + eps) / (laplacian_energy(bicubic) + eps))
    return DetailGain(
        detail_db=round(detail, 3),
        lr_psnr_db=round(lr_fidelity(enhanced, lr), 3),
        bicubic_lr_psnr_db=round(lr_fidelity(bicubic, lr), 3),
    )
