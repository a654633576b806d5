"""The contrastive correspondence loss on a tiny config, and matching accuracy against planted warps."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttsr_core.config import SearchConfig
from ttsr_core.model.net import TTSR
from ttsr_core.model.relevance import exact_search
from ttsr_core.training.correspondence import (
    contrastive_loss, homography_truth, matching_accuracy, patch_descriptors, read_opencv_matrix,
)
from ttsr_core.training.matching import graf_sample, score

from ..conftest import TINY


def _shifted_pair(shift: tuple[int, int] = (2, 3), size: int = 8, ref: int = 12, channels: int = 6, seed: int = 0):
    """Key features with random content; query = the key crop at ``shift`` (row, col): the truth is known."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, channels, ref, ref, generator=g)
    dy, dx = shift
    q = k[:, :, dy : dy + size, dx : dx + size].clone()
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    corr = torch.stack([rows + dy, cols + dx], dim=-1)[None]  # (1, size, size, 2)
    return q, k, corr


def test_descriptors_are_unit_3x3_patches() -> None:
    x = torch.randn(2, 5, 6, 7)
    d = patch_descriptors(x)
    assert d.shape == (2, 42, 45) and torch.allclose(d.norm(dim=2), torch.ones(2, 42), atol=1e-5)
    manual = x[0, :, 1:4, 2:5].reshape(-1)  # position (2, 3): the patch centred on it
    assert torch.allclose(d[0, 2 * 7 + 3], manual / manual.norm(), atol=1e-6)


def test_loss_is_low_for_the_true_match_and_high_for_a_wrong_truth() -> None:
    q, k, corr = _shifted_pair()
    right = contrastive_loss(q, k, corr, queries_per_sample=64)
    wrong = contrastive_loss(q, k, torch.flip(corr, dims=[1, 2]), queries_per_sample=64)
    assert float(right) < 0.1 < float(wrong)


def test_cells_without_truth_are_ignored_and_an_empty_batch_gives_zero() -> None:
    q, k, corr = _shifted_pair()
    none = torch.full_like(corr, -1)
    zero = contrastive_loss(q.requires_grad_(), k, none)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    half = corr.clone()
    half[:, :4] = -1
    assert math.isfinite(float(contrastive_loss(q.detach(), k, half)))
    with pytest.raises(ValueError, match="corr must be"):
        contrastive_loss(q, k, corr[:, :4])


def test_neighbours_of_the_truth_are_not_negatives() -> None:
    """The loss equals a hand-built softmax over every key except the 8 around the true cell."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 2, 4, 4, generator=g), torch.randn(1, 2, 6, 6, generator=g)
    corr = torch.full((1, 4, 4, 2), -1)
    corr[0, 2, 1] = torch.tensor([3, 3])  # one query with a truth, at an interior key cell
    scores = (patch_descriptors(k)[0] @ patch_descriptors(q)[0, 2 * 4 + 1]) / 0.07  # (36,)
    true = 3 * 6 + 3
    near = [(3 + dy) * 6 + 3 + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    keep = [i for i in range(36) if i not in near]
    expected = float(torch.logsumexp(scores[keep], 0) - scores[true])
    unmasked = float(torch.logsumexp(scores, 0) - scores[true])
    loss = float(contrastive_loss(q, k, corr, temperature=0.07))
    assert math.isclose(loss, expected, rel_tol=1e-5) and not math.isclose(loss, unmasked, rel_tol=1e-3)


def test_a_few_steps_of_contrastive_training_teach_a_tiny_extractor_to_match() -> None:
    torch.manual_seed(0)
    model = TTSR(TINY)
    g = torch.Generator().manual_seed(1)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24, generator=g) * 2 - 1, size=96, mode="bilinear")
    ref = img[:, :, :, :]  # reference = the whole image; query = a 48-px crop at (16, 24): shift (4, 6) cells
    query = img[:, :, 16:64, 24:72]
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    corr = torch.stack([rows + 4, cols + 6], dim=-1)[None]

    def accuracy() -> float:
        with torch.no_grad():
            qf, kf = model.LTE(query)[2][0], model.LTE(ref)[2][0]
            idx, _ = exact_search(qf, [kf], SearchConfig())
        return matching_accuracy(idx, corr[0], kf.shape[2], tolerance=0)[0]

    before = accuracy()
    opt = torch.optim.Adam(model.LTE.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = contrastive_loss(model.LTE(query)[2], model.LTE(ref)[2], corr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert accuracy() > max(0.8, before + 0.2)


def test_matching_accuracy_against_a_planted_warp() -> None:
    truth = np.stack(np.meshgrid(np.arange(5), np.arange(6), indexing="ij"), axis=-1) + np.array([1, 2])  # (5, 6, 2)
    width = 10
    exact = torch.from_numpy((truth[..., 0] * width + truth[..., 1]).reshape(-1))
    assert matching_accuracy(exact, truth, width) == (1.0, 30)
    one_off = exact + 1  # one cell to the right: still within tolerance 1
    assert matching_accuracy(one_off, truth, width)[0] == 1.0
    assert matching_accuracy(one_off, truth, width, tolerance=0)[0] == 0.0
    two_off = exact + 2 * width  # two rows down: wrong
    assert matching_accuracy(two_off, truth, width)[0] == 0.0
    partial = truth.copy()
    partial[:2] = -1  # unknown cells do not count
    acc, n = matching_accuracy(torch.where(torch.arange(30) < 12, two_off, exact), partial, width)
    assert (acc, n) == (1.0, 18)
    assert math.isnan(matching_accuracy(exact, np.full_like(truth, -1), width)[0])


def test_exact_search_on_planted_features_scores_perfectly() -> None:
    q, k, corr = _shifted_pair()
    idx, _ = exact_search(q[0], [k[0]], SearchConfig())
    assert matching_accuracy(idx, corr[0], k.shape[3], tolerance=0)[0] == 1.0


def _write_matrix(path: Path, h: np.ndarray) -> None:
    values = "\n".join("  ".join(f"{v:.8e}" for v in row) for row in h)
    path.write_text('<?xml version="1.0"?>\n<opencv_storage>\n<H13 type_id="opencv-matrix">\n  <rows>3</rows>\n'
                    f'  <cols>3</cols>\n  <dt>d</dt>\n  <data>\n{values} </data></H13>\n</opencv_storage>\n')


def test_opencv_matrix_reader_and_homography_truth(tmp_path: Path) -> None:
    h = np.array([[1.0, 0.0, 8.0], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])
    _write_matrix(tmp_path / "H.xml", h)
    assert np.allclose(read_opencv_matrix(tmp_path / "H.xml"), h)
    truth = homography_truth(h, (24, 32), (24, 40))
    assert truth.shape == (6, 8, 2)
    assert (truth[2, 3] == (1, 5)).all()  # (row 2 − 1, col 3 + 2): 8 px right, 4 px up
    assert (truth[0] == -1).all()  # the top row maps above the reference
    (tmp_path / "bad.xml").write_text("<opencv_storage/>")
    with pytest.raises(ValueError, match="opencv-matrix"):
        read_opencv_matrix(tmp_path / "bad.xml")


def test_graf_sample_builds_a_matching_case_from_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(small).resize((128, 96), Image.Resampling.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "graf1.png")
    Image.fromarray(np.ascontiguousarray(photo[:, 8:])).save(tmp_path / "graf3.png")  # graf3 = graf1 moved 8 px left
    _write_matrix(tmp_path / "H1to3p.xml", np.array([[1.0, 0, -8.0], [0, 1.0, 0], [0, 0, 1.0]]))
    s = graf_sample(tmp_path)
    assert s["lr"].shape == (3, 24, 32) and s["ref"].shape == (3, 96, 120) and s["corr"].shape == (24, 32, 2)
    assert (s["corr"][5, 10] == torch.tensor([5, 8])).all() and (s["corr"][:, :2] == -1).all()
    torch.manual_seed(0)
    result = score(TTSR(TINY), [s])  # any model gives a number in [0, 1] over the cells with a truth
    assert result.cells == 24 * 30 and 0.0 <= result.accuracy <= 1.0
