"""Geometric verification: a scene seen from two viewpoints is found among look-alike distractors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.matching.verification import (
    LocalFeatures,
    local_features,
    match_features,
    verification_bonus,
    verified_order,
    verify_pair,
)
from pipeline.params import GeometricModel, VerifySettings
from tests.pipeline.matching.scenes import scene, tilt, view

# One place, seen at half size through one tilt (the target) and zoomed in through another (the candidate).
TARGET_VIEW = np.diag([0.5, 0.5, 1.0]) @ tilt(640, 480, 0.08, 0.05)
CANDIDATE_VIEW = tilt(640, 480, -0.06, 0.1, 1.1)


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, list[np.ndarray], int]:
    """A target (one view of scene 0, 320 px) and 12 candidates: another view of scene 0 at index 7, distractors."""
    place = scene(0)
    target = view(place, TARGET_VIEW, (320, 240))
    candidates = [scene(100 + i) for i in range(12)]
    candidates[7] = view(place, CANDIDATE_VIEW, (640, 480))
    return target, candidates, 7


@pytest.mark.parametrize("model", list(GeometricModel))
def test_verification_ranks_the_same_place_first_among_distractors(planted, model: GeometricModel) -> None:
    target, candidates, true = planted
    settings = VerifySettings(model=model)
    t = local_features(target, settings)
    counts = [verify_pair(t, local_features(c, settings), settings).inliers for c in candidates]
    assert int(np.argmax(counts)) == true
    assert counts[true] >= 50
    others = [n for i, n in enumerate(counts) if i != true]
    assert max(others) <= settings.min_inliers, counts
    # Cosine put the true candidate last; verification puts it first, the rest keep their cosine order.
    cosines = [0.9 - 0.01 * i for i in range(len(candidates))]
    cosines[true] = 0.5
    order = verified_order(cosines, counts, settings)
    assert order[0] == true
    assert order[1:] == [i for i in range(len(candidates)) if i != true]


def test_homography_maps_points_of_one_view_onto_the_other(planted) -> None:
    target, candidates, true = planted
    settings = VerifySettings()
    found = verify_pair(local_features(target, settings), local_features(candidates[true], settings), settings)
    assert found.matrix is not None and found.inlier_points is not None
    pa, pb = found.inlier_points
    # The ground truth: target = H_t(place), candidate = H_c(place); neither is reduced (≤ 640 px).
    h_true = CANDIDATE_VIEW @ np.linalg.inv(TARGET_VIEW)
    projected = np.c_[pa, np.ones(len(pa))] @ h_true.T
    projected = projected[:, :2] / projected[:, 2:]
    assert np.median(np.linalg.norm(projected - pb, axis=1)) < 1.5


def test_features_round_trip_through_bytes_and_reduce_large_photos() -> None:
    big = scene(3, 1280, 960)
    feats = local_features(big, VerifySettings(max_side=320))
    assert feats.size == (320, 240) and feats.scale == pytest.approx(4.0)
    back = LocalFeatures.from_bytes(feats.to_bytes())
    np.testing.assert_array_equal(back.points, feats.points)
    np.testing.assert_array_equal(back.descriptors, feats.descriptors)
    assert back.scale == feats.scale and back.size == feats.size


def test_featureless_photos_verify_to_nothing() -> None:
    flat = np.full((200, 300, 3), 128, np.uint8)
    settings = VerifySettings()
    empty = local_features(flat, settings)
    assert len(empty) == 0
    assert verify_pair(empty, local_features(scene(1), settings), settings).inliers == 0
    assert match_features(empty, empty)[0].shape == (0, 2)


def test_bonus_is_zero_up_to_the_chance_level_then_grows_per_decade() -> None:
    s = VerifySettings(min_inliers=10, weight=0.5)
    assert verification_bonus(0, s) == 0.0 and verification_bonus(10, s) == 0.0
    assert verification_bonus(100, s) == pytest.approx(0.5)
    assert verified_order([0.3, 0.2], [None, None], s) == [0, 1]
    with pytest.raises(ValueError, match="2 cosines but 1"):
        verified_order([0.3, 0.2], [5], s)


@pytest.mark.parametrize("bad", [{"pool": 0}, {"ratio": 1.5}, {"model": "affine"}, {"weight": -1}, {"max_side": 32}])
def test_bad_settings_say_which(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        VerifySettings(**bad)
