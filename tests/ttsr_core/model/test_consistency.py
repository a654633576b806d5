"""Back-projection onto the input: fidelity never below bicubic's, JPEG inputs recognised, bad values refused."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ttsr_core.arrays import resize_bicubic
from ttsr_core.metrics import lr_fidelity
from ttsr_core.model.consistency import JPEG_GRID, back_project, jpeg_grid_score, make_consistent


def _scene(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A textured photo-like image: smooth gradients, edges and fine noise texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 60 * np.sin(xx / 17) * np.cos(yy / 23) + 40 * (xx > w / 2)
    img = np.stack([base, base * 0.8 + 30, 255 - base], axis=-1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _unfaithful(lr: np.ndarray, seed: int = 1) -> np.ndarray:
    """A ×4 'output' that drifted: bicubic ↑4 with a colour cast and added noise."""
    up = resize_bicubic(lr, lr.shape[1] * 4, lr.shape[0] * 4).astype(np.float32)
    up += np.array([12.0, -8.0, 5.0]) + np.random.default_rng(seed).normal(0, 6, up.shape)
    return np.clip(up, 0, 255).astype(np.uint8)


def test_back_projection_makes_the_output_agree_with_its_input():
    lr = resize_bicubic(_scene(), 50, 40)
    out = _unfaithful(lr)
    fixed = back_project(out, lr, iterations=3)
    assert fixed.shape == out.shape and fixed.dtype == np.uint8
    assert lr_fidelity(fixed, lr) > lr_fidelity(out, lr) + 10
    assert lr_fidelity(fixed, lr) > lr_fidelity(resize_bicubic(lr, 200, 160), lr)


def test_zero_iterations_leave_the_output_alone():
    lr = resize_bicubic(_scene(), 50, 40)
    out = _unfaithful(lr)
    assert back_project(out, lr, iterations=0) is out
    assert make_consistent(out, lr, iterations=0) is out


def test_jpeg_grid_score_separates_clean_from_compressed():
    lr = resize_bicubic(_scene(320, 400), 100, 80)
    assert jpeg_grid_score(lr) < JPEG_GRID
    assert jpeg_grid_score(_jpeg(lr, 75)) > JPEG_GRID
    assert jpeg_grid_score(_jpeg(lr, 40)) > JPEG_GRID
    # A crop that shifts the block grid is still recognised.
    assert jpeg_grid_score(_jpeg(lr, 75)[3:, 5:]) > JPEG_GRID


@pytest.mark.parametrize("quality", [None, 90, 75, 40])
def test_make_consistent_is_never_less_faithful_than_bicubic(quality: int | None):
    lr = resize_bicubic(_scene(320, 400, seed=3), 100, 80)
    if quality is not None:
        lr = _jpeg(lr, quality)
    out = _unfaithful(lr, seed=quality or 0)
    bicubic = resize_bicubic(lr, 400, 320)
    assert lr_fidelity(out, lr) < lr_fidelity(bicubic, lr)  # the planted drift is real
    fixed = make_consistent(out, lr)
    assert lr_fidelity(fixed, lr) >= lr_fidelity(bicubic, lr)


def test_blocky_input_gets_a_gentler_correction_than_a_clean_one():
    """On a JPEG input the correction is blurred: it does not copy the 8×8 block edges into the output."""
    lr = _jpeg(resize_bicubic(_scene(320, 400, seed=5), 100, 80), 40)
    out = _unfaithful(lr, seed=5)
    full = back_project(out, lr, iterations=3)
    gentle = make_consistent(out, lr)
    assert lr_fidelity(full, lr) > lr_fidelity(gentle, lr)


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": -1}, "iterations"), ({"strength": 0.0}, "strength"), ({"strength": 1.5}, "strength"),
    ({"sigma": -1.0}, "sigma"),
])
def test_bad_settings_are_refused(kwargs: dict, message: str):
    lr = resize_bicubic(_scene(), 50, 40)
    with pytest.raises(ValueError, match=message):
        back_project(_unfaithful(lr), lr, **kwargs)


def test_an_output_that_is_not_x4_is_refused():
    lr = resize_bicubic(_scene(), 50, 40)
    with pytest.raises(ValueError, match="not ×4"):
        back_project(resize_bicubic(lr, 150, 120), lr)
