"""Each degradation step: exact output size, seeded determinism, and the damage it is named for."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ttsr_core.model.inference import resize_bicubic
from ttsr_core.training import degradations as dg

from ..conftest import image


def _hr(rng: np.random.Generator, h: int = 64, w: int = 96) -> np.ndarray:
    return image(rng, h, w)


def _energy(a: np.ndarray) -> float:
    """Mean absolute Laplacian-like difference: high frequencies left in the image."""
    x = a.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(x, 2, axis=0)).mean() + np.abs(np.diff(x, 2, axis=1)).mean())


def test_bicubic_is_pil_bicubic_quarter(rng: np.random.Generator) -> None:
    hr = _hr(rng, 66, 98)  # not multiples of 4: floor, as the LR of a crop
    lr = dg.Bicubic()(hr, np.random.default_rng(0))
    assert lr.shape == (16, 24, 3)
    assert np.array_equal(lr, resize_bicubic(hr, 24, 16))


@pytest.mark.parametrize("name", ["bicubic", "album", "jpeg75", "mixed"])
def test_every_named_pipeline_gives_the_exact_lr_size_and_is_seeded(rng: np.random.Generator, name: str) -> None:
    hr = _hr(rng, 96, 128)
    outs = [dg.degrade(hr, name, seed=s) for s in (7, 7, 8)]
    for out in outs:
        assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(outs[0], outs[1])
    if name in ("album", "mixed"):  # random pipelines: another seed, other pixels
        assert any(not np.array_equal(outs[0], dg.degrade(hr, name, seed=s)) for s in range(9, 14))


def test_resize_chain_lands_on_the_lr_size_whatever_the_hops(rng: np.random.Generator) -> None:
    hr = _hr(rng, 100, 140)
    for seed in range(20):
        out = dg.ResizeChain(max_hops=3)(hr, np.random.default_rng(seed))
        assert out.shape == (25, 35, 3)
    with pytest.raises(ValueError, match="max_hops"):
        dg.ResizeChain(max_hops=0)
    with pytest.raises(ValueError, match="filters"):
        dg.ResizeChain(filters=("sinc",))


def test_blur_removes_high_frequencies(rng: np.random.Generator) -> None:
    hr = _hr(rng)
    blurred = dg.GaussianBlur(sigma=(1.5, 1.5))(hr, np.random.default_rng(0))
    assert blurred.shape == hr.shape and _energy(blurred) < 0.5 * _energy(hr)
    with pytest.raises(ValueError, match="sigma"):
        dg.GaussianBlur(sigma=(2.0, 1.0))


def test_sensor_noise_has_the_asked_strength_and_can_be_grey() -> None:
    flat = np.full((200, 200, 3), 128, np.uint8)
    noisy = dg.SensorNoise(sigma=(5.0, 5.0), gray_prob=0.0)(flat, np.random.default_rng(0)).astype(np.float64)
    assert abs(noisy.std() - 5.0) < 0.3
    assert not np.array_equal(noisy[..., 0], noisy[..., 1])  # colour noise
    grey = dg.SensorNoise(sigma=(5.0, 5.0), gray_prob=1.0)(flat, np.random.default_rng(0))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and grey.std() > 3


def test_chroma_subsampling_keeps_luma_and_blurs_colour_edges() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    # Reddish and bluish columns of one luma, inside the gamut once averaged: colour at full resolution.
    img[:, ::2] = (190, 110, 110)
    img[:, 1::2] = (110, 130, 190)
    out = dg.ChromaSubsampling()(img, np.random.default_rng(0))
    y_in = np.asarray(Image.fromarray(img).convert("YCbCr"))[..., 0].astype(int)
    y_out = np.asarray(Image.fromarray(out).convert("YCbCr"))[..., 0].astype(int)
    assert np.abs(y_in - y_out).max() <= 3  # luma survives (round trips through RGB only)
    assert np.abs(out.astype(int) - img.astype(int)).max() > 30  # alternating colours are averaged


def test_jpeg_is_a_real_jpeg_round_trip_at_the_drawn_quality(rng: np.random.Generator) -> None:
    hr = _hr(rng)
    out = dg.JPEG(quality=(30, 30))(hr, np.random.default_rng(0))
    buf = io.BytesIO()
    Image.fromarray(hr).save(buf, format="JPEG", quality=30, subsampling="4:2:0")
    assert np.array_equal(out, np.asarray(Image.open(buf).convert("RGB")))
    worse = dg.JPEG(quality=(10, 10))(hr, np.random.default_rng(0))
    assert np.abs(worse.astype(int) - hr).mean() > np.abs(out.astype(int) - hr).mean()
    with pytest.raises(ValueError, match="quality"):
        dg.JPEG(quality=(0, 50))


def test_illumination_changes_exposure_but_not_geometry(rng: np.random.Generator) -> None:
    hr = _hr(rng)
    bright = dg.Illumination(brightness=(1.4, 1.4), contrast=(1.0, 1.0), gamma=(1.0, 1.0), white_balance=0.0)
    out = bright(hr, np.random.default_rng(0))
    assert out.mean() > hr.mean() * 1.2
    # Same structure: the relit image correlates strongly with the original.
    assert np.corrcoef(out.astype(float).ravel(), hr.astype(float).ravel())[0, 1] > 0.95


def test_chain_probabilities_and_the_names_of_steps_that_ran(rng: np.random.Generator) -> None:
    hr = _hr(rng)
    never = dg.Chain(((dg.Bicubic(), 1.0), (dg.JPEG(), 0.0)))
    out, ran = never.apply(hr, np.random.default_rng(0))
    assert ran == ("bicubic",) and np.array_equal(out, resize_bicubic(hr, 24, 16))
    always = dg.Chain(((dg.Bicubic(), 1.0), (dg.JPEG(), 1.0)))
    assert always.apply(hr, np.random.default_rng(0))[1] == ("bicubic", "jpeg")
    with pytest.raises(ValueError, match="probability"):
        dg.Chain(((dg.JPEG(), 1.5),))


def test_one_of_draws_each_choice_by_weight(rng: np.random.Generator) -> None:
    hr = _hr(rng)
    picked = [dg.MIXED.apply(hr, np.random.default_rng(s))[1][0] for s in range(300)]
    share_album = picked.count("album") / len(picked)
    assert set(picked) == {"bicubic", "album"} and 0.55 < share_album < 0.78  # 2/3 by weight
    with pytest.raises(ValueError, match="weights"):
        dg.OneOf(((dg.BICUBIC, 0.0),))


def test_unknown_pipeline_names_the_choices() -> None:
    with pytest.raises(ValueError, match="album"):
        dg.lr_pipeline("nope")
