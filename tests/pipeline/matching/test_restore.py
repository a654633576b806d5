"""A copy restored from its original: far closer to the original than any enlargement of the copy."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.matching.restore import restore_copy
from tests.pipeline.matching.scenes import scene
from tests.pipeline.matching.test_copies import check, jpeg, shrink
from ttsr_core.arrays import resize_bicubic
from ttsr_core.metrics import psnr_y


@pytest.fixture(scope="module")
def original() -> np.ndarray:
    return scene(5, 1024, 768)


def test_a_quarter_size_jpeg_70_copy_gains_over_8_db_against_bicubic(original: np.ndarray) -> None:
    copy = jpeg(shrink(original, 0.25), 70)
    verdict = check(copy, original)
    assert verdict.is_copy and verdict.copy_to_original is not None
    restored = restore_copy(copy, original, verdict.copy_to_original, 4.0)
    assert restored.shape == original.shape
    bicubic = resize_bicubic(copy, 1024, 768)
    gain = psnr_y(restored, original) - psnr_y(bicubic, original)
    assert gain >= 8.0, gain


def test_a_cropped_colour_edited_copy_keeps_its_framing_and_its_edit(original: np.ndarray) -> None:
    crop = original[100:560, 200:820]
    edit = np.array([1.1, 1.0, 0.85])
    copy = jpeg(np.clip(shrink(crop, 0.4) * edit + 12, 0, 255).astype(np.uint8), 85)
    verdict = check(copy, original)
    assert verdict.is_copy
    restored = restore_copy(copy, original, verdict.copy_to_original, 2.5)
    assert restored.shape == (460, 620, 3)
    truth = np.clip(crop * edit + 12, 0, 255).astype(np.uint8)
    assert psnr_y(restored, truth) - psnr_y(resize_bicubic(copy, 620, 460), truth) >= 6.0


def test_bad_scale_is_refused(original: np.ndarray) -> None:
    with pytest.raises(ValueError, match="outscale"):
        restore_copy(original[:10, :10], original, np.eye(3), 0)


def test_restoration_is_refused_for_another_view_and_composited_where_the_original_stops(original) -> None:
    from pipeline.matching.restore import composite, restore_from_original
    from tests.pipeline.matching.scenes import tilt, view

    other_view = shrink(view(original, tilt(1024, 768, 0.06, 0.1, 1.1), (1024, 768)), 0.25)
    assert restore_from_original(jpeg(other_view, 70), original) is None
    # A copy framed a little wider than the original: the original covers most of the output, not all.
    wide = np.pad(original, ((0, 0), (16, 0), (0, 0)), mode="edge")  # what alignment repeats there
    found = restore_from_original(jpeg(shrink(wide, 0.25), 85), original)
    assert found is not None and 0.95 < found.covered < 1.0 and found.fidelity_db > 30
    filler = np.zeros(found.image.shape, np.uint8)
    mixed = composite(found.image, found.inside, filler)
    assert (mixed[found.inside == 0] == 0).all() and mixed[found.inside == 1].mean() > 20
