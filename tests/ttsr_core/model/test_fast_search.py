"""Coarse-to-fine search against the exact brute-force oracle on seeded features."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttsr_core.config import SearchConfig, SearchMode
from ttsr_core.model.fast_search import coarse_to_fine_search, refinement_jobs
from ttsr_core.model.relevance import exact_search
from ttsr_core.model.search import search_and_transfer


def _smooth(seed: int, c: int, h: int, w: int) -> torch.Tensor:
    """Non-negative features that vary smoothly (like LTE features of a photo), (C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h // 4 + 3, w // 4 + 3, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)[0].relu()


def _random(seed: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


def test_coarse_factor_one_is_exact() -> None:
    q, k = _random(1, 8, 13, 11), _random(2, 8, 9, 14)
    cfg = SearchConfig(mode=SearchMode.FAST, coarse_factor=1, refine_radius=0)
    assert torch.equal(coarse_to_fine_search(q, [k], cfg), exact_search(q, [k], cfg)[0])


def test_recovers_a_known_shift_on_smooth_features() -> None:
    # The query is a shifted crop of the key map: exact finds the shift nearly everywhere and the
    # coarse grid (pooled by 4, shift not a multiple of 4) must still lead refinement to it.
    big = _smooth(3, 16, 72, 80)
    q, k = big[:, 7:55, 5:65], big[:, 0:64, 0:72]
    cfg = SearchConfig(mode=SearchMode.FAST, coarse_factor=4, refine_radius=6, memory_budget_mb=1)
    exact = exact_search(q, [k], cfg)[0]
    fast = coarse_to_fine_search(q, [k], cfg)
    truth = ((torch.arange(48) + 7)[:, None] * 72 + (torch.arange(60) + 5)[None, :]).reshape(-1)
    assert (exact == truth).float().mean() > 0.95
    assert (fast == exact).float().mean() >= 0.95


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_window_covering_every_key_equals_exact(dtype: str | None) -> None:
    # With windows larger than the references and every coarse cell proposing every reference the
    # refinement is an exhaustive search: it must agree with the oracle (fp32: exactly).
    q, k1, k2 = _random(4, 8, 13, 11), _random(5, 8, 9, 14), _random(6, 8, 5, 3)
    cfg = SearchConfig(coarse_factor=3, refine_radius=20, coarse_neighbours=5, memory_budget_mb=0.01,
                       matmul_dtype=dtype)
    exact = exact_search(q, [k1, k2], cfg)[0]
    fast = coarse_to_fine_search(q, [k1, k2], cfg)
    if dtype is None:
        assert torch.equal(fast, exact)
    else:  # bf16 rounds the two paths differently; near-ties may flip
        assert (fast == exact).float().mean() > 0.9


def test_multi_reference_picks_the_reference_that_holds_the_content() -> None:
    # Query cut from the second reference; the first is unrelated. Indices are global (union).
    ref1, ref2 = _smooth(7, 16, 40, 44), _smooth(8, 16, 60, 64)
    q = ref2[:, 6:46, 9:57]
    cfg = SearchConfig(coarse_factor=4, refine_radius=4, memory_budget_mb=1)
    exact = exact_search(q, [ref1, ref2], cfg)[0]
    fast = coarse_to_fine_search(q, [ref1, ref2], cfg)
    assert (fast >= 40 * 44).float().mean() > 0.95
    assert (fast == exact).float().mean() >= 0.95


@pytest.mark.parametrize("budget_mb", [0.001, 0.05, 256.0])
def test_memory_budget_changes_chunking_not_results(budget_mb: float) -> None:
    q, k = _smooth(9, 8, 21, 19), _smooth(10, 8, 23, 30)
    base = coarse_to_fine_search(q, [k], SearchConfig(coarse_factor=4, refine_radius=3, memory_budget_mb=256))
    got = coarse_to_fine_search(q, [k], SearchConfig(coarse_factor=4, refine_radius=3, memory_budget_mb=budget_mb))
    assert torch.equal(got, base)


@pytest.mark.parametrize(("h", "w", "kh", "kw"), [(1, 1, 3, 3), (5, 7, 2, 9), (9, 6, 30, 4), (17, 13, 11, 11)])
def test_shapes_dtypes_and_index_range_at_awkward_sizes(h: int, w: int, kh: int, kw: int) -> None:
    q, k = _random(11, 4, h, w), _random(12, 4, kh, kw)
    idx = coarse_to_fine_search(q, [k, k[:, :2, :3]], SearchConfig(coarse_factor=4, refine_radius=2))
    assert idx.shape == (h * w,) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < kh * kw + 6


def test_jobs_are_deduplicated_and_sorted_by_cell() -> None:
    # A uniform shift makes every neighbour propose the same window: one window per cell.
    big = _smooth(13, 8, 64, 64)
    q, k = big[:, 8:40, 8:40], big
    cfg = SearchConfig(coarse_factor=4, refine_radius=2)
    coarse_q = F.avg_pool2d(q[None], 4, ceil_mode=True)[0]
    coarse_k = F.avg_pool2d(k[None], 4, ceil_mode=True)[0]
    cidx = exact_search(coarse_q, [coarse_k], cfg)[0]
    jobs = refinement_jobs(cidx, (8, 8), [(16, 16)], [(64, 64)], cfg)
    assert torch.all(jobs[1:, 0] >= jobs[:-1, 0])
    assert len(jobs) < 2 * 64  # 9 proposals per cell collapse to about one


def test_fast_mode_runs_through_search_and_transfer() -> None:
    q, k = _smooth(14, 8, 12, 10)[None], _smooth(15, 8, 9, 14)[None]
    v1, v2 = torch.rand(1, 4, 36, 56), torch.rand(1, 5, 18, 28)
    t = search_and_transfer(q, [k], [v1], [v2], [k], SearchConfig(mode=SearchMode.FAST, coarse_factor=2))
    assert t.hard_attention.shape == (1, 120) and t.texture_lv1.shape == (1, 4, 48, 40)
    assert torch.isfinite(t.soft_attention).all()


def test_rejects_mismatched_channels_and_no_references() -> None:
    with pytest.raises(ValueError, match="C=8"):
        coarse_to_fine_search(torch.rand(8, 4, 4), [torch.rand(4, 4, 4)], SearchConfig())
    with pytest.raises(ValueError, match="at least one"):
        coarse_to_fine_search(torch.rand(8, 4, 4), [], SearchConfig())
    with pytest.raises(ValueError, match="coarse_neighbours"):
        SearchConfig(coarse_neighbours=-1)
