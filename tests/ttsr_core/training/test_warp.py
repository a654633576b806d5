"""Homographies, rendered views and their ground-truth correspondences, checked against planted points."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ttsr_core.training import warp
from ttsr_core.training.data import PairSettings, WarpedPairs

from ..conftest import image


def test_homography_from_points_maps_the_four_points() -> None:
    src = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    dst = np.array([[3, 4], [25, 2], [22, 19], [1, 17]], float)
    h = warp.homography_from_points(src, dst)
    assert np.allclose(warp.apply_homography(h, src), dst)
    with pytest.raises(ValueError, match="4"):
        warp.homography_from_points(src[:3], dst[:3])


def test_render_puts_a_planted_dot_where_the_homography_says() -> None:
    photo = np.zeros((200, 240, 3), np.uint8)
    photo[118:121, 148:151] = 255  # a 3×3 dot centred on continuous point (149.5, 119.5)
    corners = np.array([[60, 40], [200, 55], [190, 180], [50, 170]], float)
    side = 96
    h = warp.homography_from_points(np.array([[0, 0], [side, 0], [side, side], [0, side]], float), corners)
    view = warp.render(photo, h, (side, side))
    where = warp.apply_homography(np.linalg.inv(h), np.array([149.5, 119.5]))
    r, c = np.unravel_index(view[..., 0].argmax(), view.shape[:2])
    assert abs((c + 0.5) - where[0]) <= 1.0 and abs((r + 0.5) - where[1]) <= 1.0


def test_correspondences_follow_a_planted_shift_and_mark_cells_outside() -> None:
    # Target pixel p shows what reference pixel p + (8, 4) shows: a shift of (2, 1) lv3 cells.
    shift = np.array([[1, 0, 8], [0, 1, 4], [0, 0, 1]], float)
    corr = warp.correspondences(shift, (6, 6), (6, 6))
    assert corr.shape == (6, 6, 2)
    assert (corr[0, 0] == (1, 2)).all() and (corr[3, 2] == (4, 4)).all()
    assert (corr[5, 5] == -1).all() and (corr[:, 4:] == -1).all()  # lands past the reference's edge
    assert (corr[:5, :4] >= 0).all()


def test_sample_view_stays_inside_the_photo_and_has_the_asked_zoom() -> None:
    rng = np.random.default_rng(0)
    settings = warp.ViewSettings(zoom=(2.0, 2.0), rotation_deg=0.0, tilt=0.0, offset=0.0)
    h = warp.sample_view(rng, settings, centre=(200, 150), target_side=64, ref_side=128, photo_shape=(300, 400))
    assert h is not None
    corners = warp.apply_homography(h, np.array([[0, 0], [128, 0], [128, 128], [0, 128]], float))
    assert corners.min() >= 0 and corners[:, 0].max() <= 400 and corners[:, 1].max() <= 300
    assert math.isclose(warp.photo_units_per_pixel(h, 128), 0.5, rel_tol=1e-6)  # 2× zoom: half a photo pixel per pixel
    assert np.allclose(warp.apply_homography(h, np.array([64.0, 64.0])), (200, 150))
    too_big = warp.ViewSettings(zoom=(0.1, 0.1))
    assert warp.sample_view(rng, too_big, (200, 150), 64, 128, (300, 400)) is None


def _textured_photos(rng: np.random.Generator) -> list[np.ndarray]:
    """Random blobs about 8 px wide: unlike pixel noise, they survive resampling, so views can be compared."""
    def blobs(h: int, w: int) -> np.ndarray:
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))

    return [blobs(320, 360), blobs(304, 304)]


def test_warped_pairs_truth_points_at_the_same_pixels(rng: np.random.Generator) -> None:
    """Where the truth says a target cell is, the reference shows (nearly) the same pixels."""
    settings = PairSettings(patch=64, ref_patch=96, near_prob=1.0, far_prob=0.0, lr_degradation="bicubic",
                            ref_photometry=False)
    data = WarpedPairs(_textured_photos(rng), settings, length=6, seed=1)
    for i in range(6):
        s = data[i]
        hr, ref, corr = s["hr"], s["ref"], s["corr"]
        valid = torch.nonzero(corr[..., 0] >= 0)
        assert len(valid) > 0.25 * 16 * 16
        same, other = [], []
        for a, b in valid[:40].tolist():
            r, c = corr[a, b].tolist()
            t = hr[:, 4 * a + 1 : 4 * a + 3, 4 * b + 1 : 4 * b + 3].mean((1, 2))
            same.append(float((t - ref[:, 4 * r + 1 : 4 * r + 3, 4 * c + 1 : 4 * c + 3].mean((1, 2))).abs().mean()))
            rr, cc = (r + 7) % 24, (c + 11) % 24
            other.append(float((t - ref[:, 4 * rr + 1 : 4 * rr + 3, 4 * cc + 1 : 4 * cc + 3].mean((1, 2))).abs().mean()))
        assert np.mean(same) < 0.4 * np.mean(other)  # a truth one cell off measures ~0.55


def test_warped_pairs_shapes_determinism_and_other_photo_views(rng: np.random.Generator) -> None:
    photos = _textured_photos(rng)
    settings = PairSettings(patch=64, ref_patch=96, lr_degradation="album")
    data = WarpedPairs(photos, settings, length=8, seed=3)
    s = data[2]
    assert s["lr"].shape == (3, 16, 16) and s["lr_up"].shape == (3, 64, 64) and s["hr"].shape == (3, 64, 64)
    assert s["ref"].shape == (3, 96, 96) and s["ref_down_up"].shape == (3, 96, 96) and s["corr"].shape == (16, 16, 2)
    assert all(torch.equal(s[k], data[2][k]) for k in s)
    others = WarpedPairs(photos, PairSettings(patch=64, ref_patch=96, near_prob=0.0, far_prob=0.0), length=4)
    assert all((others[i]["corr"] == -1).all() for i in range(4))
    with pytest.raises(ValueError, match="at least one photo"):
        WarpedPairs([image(rng, 40, 40)], settings)
    with pytest.raises(ValueError, match="near_prob"):
        PairSettings(near_prob=0.7, far_prob=0.6)
