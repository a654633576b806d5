"""Bounded-memory search and transfer against the full-matrix reference semantics."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttsr_core.config import Precision, SearchConfig
from ttsr_core.model.relevance import exact_search, relevance_at
from ttsr_core.model.search import full_matrix_search_transfer, search_and_transfer, search_with_relevance


def _feats(seed: int, c: int, h: int, w: int) -> torch.Tensor:
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def case() -> dict[str, torch.Tensor]:
    q, k = _feats(1, 8, 13, 11), _feats(2, 8, 9, 14)
    return {"q": q, "k": k, "v1": _feats(3, 4, 36, 56), "v2": _feats(4, 5, 18, 28), "v3": _feats(5, 6, 9, 14)}


@pytest.mark.parametrize("budget_mb", [0.0005, 0.004, 0.05, 64.0])
def test_chunked_equals_full_matrix_for_several_budgets(case: dict[str, torch.Tensor], budget_mb: float) -> None:
    ref = full_matrix_search_transfer(case["q"], case["k"], case["v1"], case["v2"], case["v3"])
    got = search_and_transfer(case["q"], [case["k"]], [case["v1"]], [case["v2"]], [case["v3"]],
                              SearchConfig(memory_budget_mb=budget_mb))
    assert torch.equal(got.hard_attention, ref.hard_attention)
    for name in ("soft_attention", "texture_lv3", "texture_lv2", "texture_lv1"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-5, rtol=1e-5)


def test_identity_when_query_equals_key() -> None:
    # Random features make every 3×3 patch unique, so each query's best key is itself.
    f = _feats(7, 16, 10, 12)[0]
    idx, val = exact_search(f, [f], SearchConfig(memory_budget_mb=0.01))
    assert torch.equal(idx, torch.arange(10 * 12))
    torch.testing.assert_close(val, torch.ones(120), atol=1e-5, rtol=0)


def test_multi_reference_matches_stitched_reference() -> None:
    """Two references stitched with a 2-column zero gap equal the union search.

    A zero gap reproduces each reference's zero padding, so every real key patch is identical; the
    stitched map only adds gap-centred patches, which are excluded where they win.
    """
    q = _feats(11, 8, 9, 7)[0]
    k1, k2 = _feats(12, 8, 6, 5)[0], _feats(13, 8, 6, 8)[0]
    idx, val = exact_search(q, [k1, k2], SearchConfig(memory_budget_mb=0.002))
    stitched = torch.cat([k1, torch.zeros(8, 6, 2), k2], dim=2)
    sidx, sval = exact_search(q, [stitched], SearchConfig(memory_budget_mb=64))
    rows, cols = sidx // stitched.shape[2], sidx % stitched.shape[2]
    in_k2 = cols >= 7
    mapped = torch.where(in_k2, 30 + rows * 8 + (cols - 7), rows * 5 + cols)
    interior = (cols != 5) & (cols != 6)
    assert interior.float().mean() > 0.8
    assert torch.equal(idx[interior], mapped[interior])
    torch.testing.assert_close(val[interior], sval[interior])


def test_multi_reference_transfer_uses_the_right_reference() -> None:
    q = _feats(21, 8, 5, 6)
    k1 = _feats(22, 8, 4, 4)
    k2 = q.clone()  # the second reference contains the query exactly
    v = lambda k, s, c: torch.full((1, c, k.shape[2] * s, k.shape[3] * s), float(s))  # noqa: E731
    t = search_and_transfer(q, [k1, k2], [v(k1, 4, 2) * 0, v(k2, 4, 2)], [v(k1, 2, 2) * 0, v(k2, 2, 2)],
                            [v(k1, 1, 2) * 0, v(k2, 1, 2)], SearchConfig())
    assert torch.equal(t.hard_attention[0], 16 + torch.arange(30))
    # Interior pixels receive 9 overlapping patches of the constant reference, divided by 9.
    assert torch.allclose(t.texture_lv1[0, :, 4:-4, 4:-4], torch.tensor(4.0))


def test_texture_tables_are_built_once_and_give_the_same_transfer() -> None:
    q1, q2 = _feats(41, 8, 5, 6), _feats(42, 8, 4, 7)  # e.g. two tiles of one target
    k1, k2 = _feats(43, 8, 4, 5), _feats(44, 8, 6, 3)
    vals = [[_feats(45 + s, 3, 4 * s, 5 * s), _feats(48 + s, 3, 6 * s, 3 * s)] for s in (4, 2, 1)]
    tables: dict = {}
    for q in (q1, q2):
        plain = search_and_transfer(q, [k1, k2], *vals, SearchConfig())
        cached = search_and_transfer(q, [k1, k2], *vals, SearchConfig(), tables)
        for name in ("hard_attention", "texture_lv1", "texture_lv2", "texture_lv3"):
            assert torch.equal(getattr(cached, name), getattr(plain, name))
    assert sorted(tables) == [(0, 1), (0, 2), (0, 4)]
    tables[(0, 4)] = torch.zeros_like(tables[(0, 4)])  # proof that the second call reads the dict
    assert not search_and_transfer(q1, [k1, k2], *vals, SearchConfig(), tables).texture_lv1.any()


def test_relevance_at_is_the_normalised_patch_inner_product() -> None:
    q, k = _feats(31, 4, 5, 6)[0], _feats(32, 4, 7, 3)[0]
    idx = torch.randint(0, 21, (30,), generator=torch.Generator().manual_seed(0))
    qn = F.normalize(F.unfold(q[None], 3, padding=1)[0], dim=0)  # (C*9, 30)
    kn = F.normalize(F.unfold(k[None], 3, padding=1)[0], dim=0)  # (C*9, 21)
    torch.testing.assert_close(relevance_at(q, [k], idx), (qn * kn[:, idx]).sum(0))


def test_bfloat16_search_agrees_mostly(case: dict[str, torch.Tensor]) -> None:
    idx32, _ = exact_search(case["q"][0], [case["k"][0]], SearchConfig())
    idx16, _ = exact_search(case["q"][0], [case["k"][0]], SearchConfig(matmul_dtype="bfloat16"))
    assert (idx32 == idx16).float().mean() > 0.8


def test_search_config_validation() -> None:
    with pytest.raises(ValueError):
        SearchConfig(memory_budget_mb=0)
    with pytest.raises(ValueError, match="'int8'"):
        SearchConfig(matmul_dtype="int8")
    assert SearchConfig(matmul_dtype="bfloat16").matmul_dtype is Precision.BFLOAT16
    with pytest.raises(ValueError):
        SearchConfig(mode="nearest")


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_search_relevance_is_the_soft_attention_at_its_match(mode: str) -> None:
    """Inference takes the search's own score as S: it must be relevance_at of the chosen index."""
    q = _feats(41, 8, 17, 23)[0]
    q[:, :4, :4] = 0  # all-zero patches: the norm clamp, as F.normalize
    keys = [_feats(42, 8, 21, 19)[0], _feats(43, 8, 5, 7)[0]]
    idx, rel = search_with_relevance(q, keys, SearchConfig(mode=mode, coarse_factor=4, refine_radius=2))
    torch.testing.assert_close(rel, relevance_at(q, keys, idx), atol=1e-6, rtol=0)
    assert rel.abs().max() > 0.3


def test_inference_soft_attention_matches_the_differentiable_one(case: dict[str, torch.Tensor]) -> None:
    args = (case["q"], [case["k"]], [case["v1"]], [case["v2"]], [case["v3"]], SearchConfig())
    with torch.no_grad():
        fast_path = search_and_transfer(*args)
    with torch.enable_grad():
        grad_path = search_and_transfer(*args)  # relevance_at, as training uses it
    assert torch.equal(fast_path.hard_attention, grad_path.hard_attention)
    torch.testing.assert_close(fast_path.soft_attention, grad_path.soft_attention.detach(), atol=1e-6, rtol=0)


def test_row_major_normalised_patches_are_the_same_values() -> None:
    """The oneDNN product reads rows written in the division's pass; they must equal F.normalize's."""
    from ttsr_core.model.relevance import normalised_patches

    padded = F.pad(_feats(51, 8, 9, 13)[0], (1, 1, 1, 1))
    padded[:, 2:5, 2:6] = 0  # zero patches hit the eps clamp
    view = normalised_patches(padded, 1, 8, torch.float32)
    rows = normalised_patches(padded, 1, 8, torch.float32, contiguous=True)
    assert rows.is_contiguous() and not view.is_contiguous()
    assert torch.equal(rows, view)
