"""Placement: a small picture is found inside a larger one by its pixels, at the right scale and shift."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.matching.placement import place
from tests.pipeline.matching.scenes import scene


@pytest.fixture(scope="module")
def large() -> np.ndarray:
    return scene(3, 800, 600)


@pytest.mark.parametrize("x0, y0, w, h, factor", [
    (120, 90, 560, 420, 0.15),  # a 70 % crop reduced to 84×63
    (0, 0, 800, 600, 0.1),  # the whole frame
    (300, 250, 420, 330, 0.3),  # a smaller crop, less reduced
])
def test_a_reduced_crop_is_placed_where_it_came_from(large: np.ndarray, x0: int, y0: int, w: int, h: int,
                                                     factor: float) -> None:
    crop = large[y0:y0 + h, x0:x0 + w]
    small = cv2.resize(crop, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    found = place(small, large, min_scale=1.5, min_share=0.5)
    assert found is not None and found.score > 0.9
    # Small pixel u covers crop pixels around (u + 0.5) * w / small_w - 0.5. Each corner lands within 0.75 of a
    # small pixel: scales come in whole pixels of the reduced picture, about 0.5 % apart at this size.
    sw, sh = small.shape[1], small.shape[0]
    for u, v in [(0, 0), (sw - 1, 0), (0, sh - 1), (sw - 1, sh - 1)]:
        mapped = found.small_to_large @ np.array([u, v, 1.0])
        truth = (x0 + (u + 0.5) * w / sw - 0.5, y0 + (v + 0.5) * h / sh - 0.5)
        assert np.abs(mapped[:2] - truth).max() < 0.75 * w / sw, (u, v, mapped, truth)


def test_colours_changed_by_a_gain_and_offset_do_not_move_the_place(large: np.ndarray) -> None:
    crop = large[100:520, 200:760]
    small = cv2.resize(crop, (112, 84), interpolation=cv2.INTER_AREA)
    edited = np.clip(small.astype(np.float32) * 0.85 + 20, 0, 255).astype(np.uint8)
    a, b = place(small, large, min_scale=1.5, min_share=0.5), place(edited, large, min_scale=1.5, min_share=0.5)
    assert a is not None and b is not None
    assert np.abs(a.small_to_large - b.small_to_large).max() < 0.5


def test_a_picture_that_cannot_fit_at_the_smallest_scale_is_not_placed(large: np.ndarray) -> None:
    assert place(large[:500, :700], large, min_scale=1.5, min_share=0.5) is None  # only 1.14× smaller
    assert place(large, large, min_scale=1.5, min_share=0.5) is None  # as large as the other
