"""Real photo pairs: homographies read and rescaled, reference crops and correspondences where the truth is."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttsr_core.config import SCALE
from ttsr_core.training.photo_pairs import pair_sample, read_photo_pairs

from ..conftest import image


def _cut_at(y: int, x: int, patch: int):
    def cut(photo: np.ndarray, rng: np.random.Generator, scale: float) -> tuple[np.ndarray, float, float]:
        return np.ascontiguousarray(photo[y : y + patch, x : x + patch]), float(y), float(x)
    return cut


def _write_pair(folder: Path, scene: np.ndarray, shift: tuple[int, int], homography: bool) -> None:
    """target = the scene's top-left part; reference = the part shifted by (dx, dy), saved at full size."""
    dx, dy = shift
    Image.fromarray(scene[:160, :200]).save(folder / "t.png")
    Image.fromarray(scene[dy : dy + 160, dx : dx + 200]).save(folder / "r.png")
    (folder / "pairs.tsv").write_text("target\treference\tsource\nt.png\tr.png\tsynthetic\n")
    if homography:  # target pixel (x, y) shows in the reference at (x − dx, y − dy)
        h = [1, 0, -dx, 0, 1, -dy, 0, 0, 1]
        (folder / "homographies.tsv").write_text("t.png\tr.png\t" + "\t".join(map(str, h)) + "\t42\n")


def test_reference_crop_and_correspondences_follow_the_homography(tmp_path: Path, rng: np.random.Generator) -> None:
    scene = image(rng, 220, 260)
    _write_pair(tmp_path, scene, (24, 16), homography=True)
    (pair,) = read_photo_pairs(tmp_path / "pairs.tsv", max_side=1000)
    assert pair.target_to_ref is not None and pair.name == "t→r"
    hr, ref, corr = pair_sample(pair, np.random.default_rng(0), _cut_at(40, 60, 32), 32, 64)
    np.testing.assert_array_equal(hr, scene[40:72, 60:92])
    # Where in the scene the (jittered) reference crop was cut: the one offset whose pixels agree.
    (y0, x0), = [(y, x) for y in range(0, 160 - 64 + 1) for x in range(0, 200 - 64 + 1)
                 if np.array_equal(scene[16 + y : 16 + y + 64, 24 + x : 24 + x + 64], ref)]
    valid = corr[..., 0] >= 0
    assert valid.mean() > 0.5
    for r, c in zip(*np.nonzero(valid)):
        # The cell centre of the target, in reference-crop pixels, lies in the cell the truth names.
        x = 60 + SCALE * c + SCALE / 2 - 24 - x0
        y = 40 + SCALE * r + SCALE / 2 - 16 - y0
        assert tuple(corr[r, c]) == (int(y // SCALE), int(x // SCALE))


def test_homographies_are_rescaled_to_the_loaded_size(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_pair(tmp_path, image(rng, 220, 260), (24, 16), homography=True)
    (pair,) = read_photo_pairs(tmp_path / "pairs.tsv", max_side=100)  # both loaded at half size
    assert pair.target.shape[1] == 100
    np.testing.assert_allclose(pair.target_to_ref, [[1, 0, -12], [0, 1, -8], [0, 0, 1]], atol=1e-9)
    back = pair.reversed()
    np.testing.assert_allclose(back.target_to_ref @ pair.target_to_ref, np.eye(3), atol=1e-9)


def test_without_a_homography_the_reference_is_cut_at_the_same_place(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_pair(tmp_path, image(rng, 220, 260), (0, 0), homography=False)
    (pair,) = read_photo_pairs(tmp_path / "pairs.tsv", max_side=1000)
    assert pair.target_to_ref is None
    hr, ref, corr = pair_sample(pair, np.random.default_rng(0), _cut_at(64, 80, 32), 32, 64)
    assert (corr == -1).all() and ref.shape == (64, 64, 3)


def test_bad_homography_file_names_the_pair(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_pair(tmp_path, image(rng, 220, 260), (0, 0), homography=False)
    (tmp_path / "homographies.tsv").write_text("t.png\tr.png\t1\t0\tx\t0\t1\t0\t0\t0\t1\n")
    with pytest.raises(ValueError, match="bad homography for t.png"):
        read_photo_pairs(tmp_path / "pairs.tsv", max_side=1000)
