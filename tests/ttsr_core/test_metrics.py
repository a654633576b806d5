"""The no-reference detail measure of the gallery: zero for bicubic itself, up for detail, down for blur."""
from __future__ import annotations

import numpy as np
import pytest

from ttsr_core.arrays import resize_bicubic
from ttsr_core.metrics import detail_gain, luma, psnr


def test_detail_gain_is_zero_for_bicubic_positive_for_detail_negative_for_blur() -> None:
    rng = np.random.default_rng(1)
    lr = rng.integers(40, 200, size=(18, 24, 3), dtype=np.uint8)
    bicubic = resize_bicubic(lr, 96, 72)
    same = detail_gain(lr, bicubic)
    assert same.detail_db == pytest.approx(0.0, abs=1e-6)
    assert same.lr_psnr_db == same.bicubic_lr_psnr_db
    detailed = np.clip(bicubic.astype(np.int16) + rng.integers(-30, 31, bicubic.shape), 0, 255).astype(np.uint8)
    assert detail_gain(lr, detailed).detail_db > 3.0
    blurred = resize_bicubic(resize_bicubic(lr, 12, 9), 96, 72)
    worse = detail_gain(lr, blurred)
    assert worse.detail_db < -3.0
    assert worse.lr_psnr_db < same.lr_psnr_db
    with pytest.raises(ValueError, match="same shape"):
        detail_gain(lr, bicubic, bicubic[:-1])


def test_luma_psnr_by_hand() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0] = (10, 0, 0)  # luma differs by 2.99 at one of four pixels
    assert luma(b)[0, 0] == pytest.approx(2.99)
    assert psnr(luma(a), luma(b)) == pytest.approx(10 * np.log10(255**2 / (2.99**2 / 4)), rel=1e-6)
    assert psnr(luma(a), luma(a)) == float("inf")
    # Identical images: the gallery's fidelity shows 99 dB, a number JSON can hold.
    assert detail_gain(a, resize_bicubic(a, 8, 8)).lr_psnr_db == 99.0
