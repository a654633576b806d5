"""The gallery shows what verification matched: the target beside its reference, the inlier matches drawn."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.gallery.cards import GalleryCard, GalleryReference
from pipeline.gallery.matches import MATCH_HEIGHT, draw_matches, save_matches
from pipeline.gallery.render import render_gallery
from pipeline.matching.verification import local_features, verify_pair
from pipeline.params import VerifySettings
from pipeline.vocabulary import EnhancementStatus
from tests.pipeline.matching.scenes import scene, tilt, view


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """A scene and a small, tilted second view of it (the target)."""
    place = scene(21, 800, 600)
    other = view(place, tilt(800, 600, 0.05, 0.08, 1.05), (800, 600))
    return cv2.resize(other, (200, 150), interpolation=cv2.INTER_AREA), place


def test_the_drawing_puts_each_inlier_on_both_photos() -> None:
    target, reference = _pair()
    a, b = local_features(target), local_features(reference)
    found = verify_pair(a, b, VerifySettings())
    assert found.inliers >= 20
    drawn = draw_matches(target, reference, found, a.scale, b.scale)
    plain = draw_matches(target, reference, type(found)(0, 0, found.model), a.scale, b.scale)
    assert drawn.shape == plain.shape and drawn.shape[0] == MATCH_HEIGHT
    assert drawn.shape[1] == round(200 * MATCH_HEIGHT / 150) + 8 + round(800 * MATCH_HEIGHT / 600)
    changed = np.abs(drawn.astype(int) - plain).sum(axis=2) > 60
    left = MATCH_HEIGHT * 200 // 150
    assert changed[:, :left].any() and changed[:, left + 8:].any()  # lines run from one photo to the other


def test_a_card_shows_the_matches_and_the_recorded_inliers(tmp_path: Path) -> None:
    target, reference = _pair()
    paths = {}
    for name, rgb in (("small.png", target), ("big.png", reference), ("out.png", cv2.resize(target, (800, 600)))):
        paths[name] = tmp_path / name
        Image.fromarray(rgb).save(paths[name])
    card = GalleryCard("c1", "small.png", EnhancementStatus.succeeded, paths["small.png"], paths["out.png"],
                       references=(GalleryReference("big.png", paths["big.png"], 0, 0.9, 0.5, inliers=87),))
    page = render_gallery([card], tmp_path / "gallery").read_text(encoding="utf-8")
    heading = re.search(r"matched features: (\d+) of (\d+) matches agree on one homography with big.png", page)
    assert heading is not None and 20 <= int(heading.group(1)) <= int(heading.group(2))
    assert "<dt>inliers</dt><dd>87</dd>" in page
    assert list((tmp_path / "gallery").rglob("matches.jpg"))
    meta = save_matches(target, reference, tmp_path)
    assert meta["inliers"] == int(heading.group(1)) and (tmp_path / "matches.jpg").is_file()
