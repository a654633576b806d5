"""Copy detection: planted copies (smaller, recompressed, cropped, colour-edited) are found; two views of one place are not."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.matching.copies import CopySettings, align_original, check_copy
from pipeline.matching.verification import local_features
from pipeline.params import VerifySettings
from tests.pipeline.matching.scenes import scene, tilt, view

FEATURES = VerifySettings()


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def shrink(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)


def check(a: np.ndarray, b: np.ndarray, **kw):  # type: ignore[no-untyped-def]
    return check_copy(a, local_features(a, FEATURES), b, local_features(b, FEATURES), CopySettings(), **kw)


@pytest.fixture(scope="module")
def original() -> np.ndarray:
    return scene(5, 1024, 768)


@pytest.mark.parametrize("make", [
    lambda o: jpeg(shrink(o, 0.25), 70),
    lambda o: jpeg(shrink(o, 0.5), 40),
    lambda o: jpeg(shrink(o[100:560, 200:820], 0.4), 85),  # cropped to 60 % of each side, then reduced
    lambda o: jpeg(np.clip(shrink(o, 0.3) * np.array([1.1, 1.0, 0.85]) + 12, 0, 255).astype(np.uint8), 90),
], ids=["quarter-q70", "half-q40", "crop60", "colour-edit"])
def test_planted_copies_are_found_with_the_original_named(original: np.ndarray, make) -> None:  # type: ignore[no-untyped-def]
    copy = make(original)
    verdict = check(copy, original)
    assert verdict.is_copy, verdict
    assert verdict.copy == 0 and verdict.scale is not None and verdict.scale > 1.5
    flipped = check(original, copy)  # either order names the same copy
    assert flipped.is_copy and flipped.copy == 1


def test_a_same_size_recompression_is_the_copy_by_its_smaller_file(original: np.ndarray) -> None:
    copy = jpeg(original, 50)
    verdict = check(original, copy, bytes_a=900_000, bytes_b=120_000)
    assert verdict.is_copy and verdict.copy == 1 and verdict.scale == pytest.approx(1.0, abs=0.02)


def test_another_view_of_the_same_place_is_no_copy(original: np.ndarray) -> None:
    other = view(original, tilt(1024, 768, 0.05, 0.08, 1.05), (1024, 768))
    verdict = check(jpeg(shrink(other, 0.3), 85), original)
    assert not verdict.is_copy and "similarity" in verdict.reason, verdict


def test_the_same_place_with_something_moved_is_no_copy(original: np.ndarray) -> None:
    later = original.copy()
    cv2.rectangle(later, (600, 300), (700, 460), (20, 200, 30), -1)  # someone walked into the picture
    verdict = check(jpeg(shrink(later, 0.3), 85), original)
    assert not verdict.is_copy and "differs" in verdict.reason, verdict


def test_unrelated_photos_are_no_copy(original: np.ndarray) -> None:
    verdict = check(jpeg(shrink(scene(6, 1024, 768), 0.3), 85), original)
    assert not verdict.is_copy and verdict.copy is None


def test_align_original_puts_the_original_in_the_copys_frame(original: np.ndarray) -> None:
    # The copy is the crop (200..820, 100..560) at 0.4×: the centre of copy pixel x is at crop pixel
    # (x + 0.5) * 2.5 - 0.5, i.e. original 200.75 + 2.5 x (and likewise down).
    h = np.array([[2.5, 0, 200.75], [0, 2.5, 100.75], [0, 0, 1.0]])
    aligned = align_original(original, h, (248, 184))
    truth = shrink(original[100:560, 200:820], 0.4)
    diff = np.abs(aligned[4:-4, 4:-4].astype(float) - truth[4:-4, 4:-4].astype(float)).mean()
    assert diff < 1.5


def _bare(seed: int) -> np.ndarray:
    """A bare table with a coin: smooth shading, one soft disc, sensor noise; too little for feature matches."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:768, 0:1024].astype(np.float32)
    shade = 90 + 60 * (xx / 1024) + 30 * (yy / 768) * rng.uniform(0.5, 1.5)
    cx, cy = rng.uniform(200, 800), rng.uniform(200, 560)
    disc = 80 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / 60.0 ** 2) ** 3)
    grey = shade + disc + rng.normal(0, 2, shade.shape)
    return np.clip(np.stack([grey, grey * 0.95, grey * 0.85], -1), 0, 255).astype(np.uint8)


def test_a_bare_scenes_thumbnail_is_found_as_one_whole_frame_and_another_bare_photo_is_not() -> None:
    table = _bare(1)
    thumb = jpeg(shrink(table, 0.2), 60)
    verdict = check(thumb, table)
    assert verdict.is_copy and verdict.copy == 0 and "whole frame" in verdict.reason, verdict
    assert verdict.copy_to_original is not None and verdict.scale == pytest.approx(5.0, abs=0.01)
    assert not check(thumb, _bare(2)).is_copy  # the coin lies elsewhere on another table
    features = local_features(thumb, FEATURES), local_features(table, FEATURES)
    features_alone = CopySettings(whole_frame=False, crop_search=False)
    assert not check_copy(thumb, features[0], table, features[1], features_alone).is_copy


# The crop (x 200..916, y 150..687: 70 % of each side) of a 1024×768 photo, reduced to 0.12× (86×64).
CROP_X, CROP_Y, CROP_W, CROP_H = 200, 150, 716, 537


def _small_crop(photo: np.ndarray, factor: float = 0.12) -> np.ndarray:
    return jpeg(shrink(photo[CROP_Y:CROP_Y + CROP_H, CROP_X:CROP_X + CROP_W], factor), 70)


@pytest.fixture(scope="module")
def soft() -> np.ndarray:
    """A soft scene (a small one enlarged 16×): its thumbnail keeps a few dozen features, too few of them match."""
    return cv2.resize(scene(6, 64, 48), (1024, 768), interpolation=cv2.INTER_CUBIC)


def test_a_small_cropped_copy_is_found_by_its_pixels_where_features_cannot_place_it(soft: np.ndarray) -> None:
    copy = _small_crop(soft)
    features_alone = CopySettings(whole_frame=False, crop_search=False)
    assert not check_copy(copy, local_features(copy, FEATURES), soft, local_features(soft, FEATURES),
                          features_alone).is_copy  # the premise: features cannot place it
    verdict = check(copy, soft)
    assert verdict.is_copy and verdict.copy == 0 and "by its pixels" in verdict.reason, verdict
    assert verdict.scale == pytest.approx(CROP_W / copy.shape[1], rel=0.02)
    # The copy's centre lands on the crop's centre in the original (within a copy pixel).
    centre = verdict.copy_to_original @ np.array([(copy.shape[1] - 1) / 2, (copy.shape[0] - 1) / 2, 1.0])
    assert np.abs(centre[:2] - [CROP_X + (CROP_W - 1) / 2, CROP_Y + (CROP_H - 1) / 2]).max() < verdict.scale
    flipped = check(soft, copy)
    assert flipped.is_copy and flipped.copy == 1
    # Given as loaders (photos on disk), each is decoded once, though both pixel tests look at it.
    loads = {"copy": 0, "original": 0}

    def loader(name: str, rgb: np.ndarray):  # type: ignore[no-untyped-def]
        def load() -> np.ndarray:
            loads[name] += 1
            return rgb
        return load

    lazily = check_copy(loader("copy", copy), local_features(copy, FEATURES), loader("original", soft),
                        local_features(soft, FEATURES), CopySettings())
    assert lazily.is_copy and lazily.reason == verdict.reason and loads == {"copy": 1, "original": 1}


def test_a_small_crop_of_the_same_place_with_something_moved_is_no_copy(soft: np.ndarray) -> None:
    later = soft.copy()
    cv2.rectangle(later, (500, 300), (600, 460), (20, 200, 30), -1)  # inside the crop
    verdict = check(_small_crop(later), soft)
    assert not verdict.is_copy and "by its pixels" in verdict.reason, verdict


def test_a_small_crop_of_another_photo_is_no_copy(soft: np.ndarray) -> None:
    other = cv2.resize(scene(7, 64, 48), (1024, 768), interpolation=cv2.INTER_CUBIC)
    assert not check(_small_crop(other), soft).is_copy


def test_a_copy_too_small_to_tell_from_the_next_frame_is_not_searched(soft: np.ndarray) -> None:
    tiny = _small_crop(soft, 0.06)  # 43 px on its long side, below search_min_side
    assert max(tiny.shape[:2]) < CopySettings().search_min_side
    verdict = check(tiny, soft)
    assert not verdict.is_copy and "by its pixels" not in verdict.reason, verdict


def test_a_bare_scenes_crop_is_not_searched_for_it_would_fit_another_bare_photo() -> None:
    # Two bare tables differ by where the coin lies: some crop of one, rescaled, is the other's crop.
    thumb = _small_crop(_bare(2))
    assert len(local_features(thumb, FEATURES)) < CopySettings().search_min_features
    verdict = check(thumb, _bare(3))
    assert not verdict.is_copy and "by its pixels" not in verdict.reason, verdict
