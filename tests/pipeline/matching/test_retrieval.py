"""Reference retrieval: cosine candidates with exclusions, texture relevance against an oracle, re-ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.embedding.vector_index import VectorIndex
from pipeline.matching import retrieval
from pipeline.matching.retrieval import (
    Candidate,
    CandidateScore,
    RankedReference,
    Ranking,
    RerankSettings,
    RetrievalSettings,
    cosine_candidates,
    gate_references,
    lends_texture,
    rank_candidates,
    texture_relevance,
    verify_candidates,
)
from pipeline.params import VerifySettings
from tests.pipeline.matching.scenes import scene, tilt, view
from ttsr_core.config import SearchConfig, SearchMode, TTSRConfig
from ttsr_core.model.inference import prepare_reference, resize_bicubic, to_tensor
from ttsr_core.model.net import TTSR

SHA = {i: f"{i:064x}" for i in range(10)}


@pytest.fixture(scope="module")
def model() -> TTSR:
    torch.manual_seed(0)
    return TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8))).eval()


def _index(n: int = 6, dim: int = 8, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return VectorIndex.build(np.arange(n), vectors, "test:key"), vectors


def test_cosine_candidates_match_brute_force_and_exclude_self_and_copies() -> None:
    index, vectors = _index()
    by_id = dict(SHA)
    by_id[4] = SHA[0]  # photo 4 is a byte-identical copy of the target 0
    got = cosine_candidates(index, vectors[0], k=3, target_id=0, target_sha256=SHA[0],
                            sha256_by_id={i: by_id[i] for i in range(6)})
    scores = vectors @ vectors[0]
    oracle = [i for i in np.argsort(-scores) if i not in (0, 4)][:3]
    assert [c.photo_id for c in got] == oracle
    assert all(isinstance(c, Candidate) and c.sha256 == SHA[c.photo_id] for c in got)
    np.testing.assert_allclose([c.cosine for c in got], scores[oracle], atol=1e-5)


def test_cosine_candidates_keep_a_same_scene_photo_with_other_content() -> None:
    index, vectors = _index()
    # Photo 1 is nearly the target's vector (a larger copy of the same scene) but other bytes.
    index.remove([1])
    index.add([1], (vectors[0] + 1e-3)[None])
    got = cosine_candidates(index, vectors[0], k=1, target_id=0, target_sha256=SHA[0],
                            sha256_by_id={i: SHA[i] for i in range(6)})
    assert got[0].photo_id == 1 and got[0].cosine > 0.999


def test_cosine_candidates_skip_ids_unknown_to_the_caller_and_reject_bad_k() -> None:
    index, vectors = _index()
    got = cosine_candidates(index, vectors[0], k=5, target_id=0, target_sha256=SHA[0],
                            sha256_by_id={2: SHA[2], 3: SHA[3]})
    assert {c.photo_id for c in got} <= {2, 3}
    with pytest.raises(ValueError, match="0"):
        cosine_candidates(index, vectors[0], k=0, target_id=0, target_sha256=SHA[0], sha256_by_id={})


def _oracle_relevance(model: TTSR, target: np.ndarray, candidate: np.ndarray) -> float:
    """Full relevance matrix (the paper's formulation), max over keys, mean over queries."""
    h, w = target.shape[:2]
    with torch.no_grad():
        q = model.LTE(to_tensor(resize_bicubic(target, w * 4, h * 4)))[2]
        k = model.LTE(to_tensor(prepare_reference(candidate).ref_down_up))[2]
        qn = F.normalize(F.unfold(q, 3, padding=1), dim=1)  # (1, C*9, h*w)
        kn = F.normalize(F.unfold(k, 3, padding=1), dim=1)  # (1, C*9, K)
        return float((kn.transpose(1, 2) @ qn).max(dim=1).values.mean())


def test_texture_relevance_equals_the_full_matrix_oracle_in_exact_mode(model: TTSR) -> None:
    rng = np.random.default_rng(3)
    target = rng.integers(0, 256, size=(20, 28, 3), dtype=np.uint8)
    cands = [rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8) for _ in range(2)]
    settings = RerankSettings(target_side=64, candidate_side=256, search=SearchConfig(mode=SearchMode.EXACT))
    got = texture_relevance(model, target, cands, settings)
    assert len(got) == 2
    for value, cand in zip(got, cands):
        assert value == pytest.approx(_oracle_relevance(model, target, cand), abs=1e-4)


def test_texture_relevance_works_at_a_small_scale_and_never_enlarges(model: TTSR, monkeypatch) -> None:
    seen: list[tuple[int, ...]] = []
    real = retrieval.prepare_reference

    def spy(image, name):  # type: ignore[no-untyped-def]
        seen.append(image.shape)
        return real(image, name)

    monkeypatch.setattr(retrieval, "prepare_reference", spy)
    rng = np.random.default_rng(4)
    target = rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    big = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
    tiny = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    got = texture_relevance(model, target, [big, small, tiny], RerankSettings(target_side=32, candidate_side=128))
    assert seen[0] == (96, 128, 3)  # reduced to 128 on the long side
    assert seen[1] == (40, 52, 3)  # never enlarged
    assert got[2] == -1.0  # smaller than one texture patch
    assert all(-1.0 <= v <= 1.0 + 1e-6 for v in got)


def test_texture_relevance_leaves_the_callers_model_as_it_was() -> None:
    torch.manual_seed(1)
    model = TTSR(TTSRConfig(num_feat=4, num_block=(1, 1, 1, 1), lte_channels=(4, 4, 8))).train()
    weight = model.LTE.slice1[0].weight
    rng = np.random.default_rng(5)
    texture_relevance(model, rng.integers(0, 256, (20, 28, 3), dtype=np.uint8),
                      [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)])
    assert model.training and not weight.is_contiguous(memory_format=torch.channels_last)


def test_ranking_orders_by_relevance_then_cosine(model: TTSR, monkeypatch) -> None:
    cands = [Candidate(i, SHA[i], cos) for i, cos in ((1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6))]
    monkeypatch.setattr(retrieval, "texture_relevance", lambda m, t, px, s, **kw: (0.5, 0.9, 0.9, 0.99))
    loaded: list[int] = []

    def load(c: Candidate) -> np.ndarray:
        loaded.append(c.photo_id)
        return np.zeros((16, 16, 3), np.uint8)

    target = np.zeros((8, 8, 3), np.uint8)
    plain = RetrievalSettings(top_k=3, refs=2, verify=VerifySettings(enabled=False))
    got = rank_candidates(model, target, cands, load, plain).chosen
    assert loaded == [1, 2, 3]  # only the top_k cosine candidates are looked at
    assert [(r.rank, r.photo_id) for r in got] == [(0, 2), (1, 3)]  # tie at 0.9 broken by cosine
    assert got[0].cosine == 0.8 and got[0].relevance == 0.9
    assert rank_candidates(model, target, [], load).chosen == ()


def test_verification_puts_the_same_place_first_and_every_candidate_keeps_its_scores(model: TTSR,
                                                                                    monkeypatch) -> None:
    place = scene(0)
    target = view(place, np.diag([0.5, 0.5, 1.0]) @ tilt(640, 480, 0.08, 0.05), (320, 240))
    pixels = {i: scene(100 + i) for i in range(1, 9)}
    pixels[6] = view(place, tilt(640, 480, -0.06, 0.1, 1.1), (640, 480))  # the same place, worst cosine but one
    cands = [Candidate(i, SHA[i], 0.9 - 0.01 * i) for i in range(1, 9)]
    # The model likes a look-alike best: texture relevance alone would pick candidate 1.
    monkeypatch.setattr(retrieval, "texture_relevance",
                        lambda m, t, px, s, **kw: tuple(0.9 - 0.1 * i for i in range(len(px))))
    settings = RetrievalSettings(top_k=3, refs=2, verify=VerifySettings(pool=8))
    got = rank_candidates(model, target, cands, lambda c: pixels[c.photo_id], settings)
    assert [r.photo_id for r in got.chosen] == [6, 1]
    assert got.chosen[0].inliers is not None and got.chosen[0].inliers >= 50
    assert [s.photo_id for s in got.scores][:3] == [6, 1, 2]  # verified first, then relevance
    assert len(got.scores) == 8 and all(s.inliers is not None for s in got.scores)
    assert [s.rank for s in got.scores[:3]] == [0, 1, None]
    assert sum(s.relevance is not None for s in got.scores) == 3  # only the top_k met the model
    record = got.scores[0].as_record()
    assert record["photo_id"] == 6 and record["inliers"] == got.chosen[0].inliers and record["rank"] == 0
    # Verified first by the caller (outside its device slot): the same ranking; a pool of another size is refused.
    load = lambda c: pixels[c.photo_id]  # noqa: E731
    inliers = verify_candidates(target, cands, load, settings)
    assert rank_candidates(model, target, cands, load, settings, inliers=inliers) == got
    with pytest.raises(ValueError, match="7 inlier counts for a pool of 8"):
        rank_candidates(model, target, cands, load, settings, inliers=inliers[:7])
    # Without verification the look-alikes win.
    off = rank_candidates(model, target, cands, lambda c: pixels[c.photo_id],
                          RetrievalSettings(top_k=3, refs=2, verify=VerifySettings(enabled=False)))
    assert [r.photo_id for r in off.chosen] == [1, 2] and off.scores[0].inliers is None


def test_settings_reject_bad_values_naming_them() -> None:
    with pytest.raises(ValueError, match="refs.*3.*top_k.*2"):
        RetrievalSettings(top_k=2, refs=3)
    with pytest.raises(ValueError, match="top_k.*0"):
        RetrievalSettings(top_k=0)
    with pytest.raises(ValueError, match="min_relevance.*1.5"):
        RetrievalSettings(min_relevance=1.5)
    with pytest.raises(ValueError, match="target_side.*4"):
        RerankSettings(target_side=4)
    # What changes the scores changes the cache key; the default is the fast search.
    assert RerankSettings().fingerprint()["search_mode"] == "fast"
    exact = RerankSettings(search=SearchConfig(mode=SearchMode.EXACT)).fingerprint()
    assert exact != RerankSettings().fingerprint() and exact["search_mode"] == "exact"


def _ranked(rank: int, relevance: float, inliers: int | None) -> RankedReference:
    return RankedReference(rank, 10 + rank, f"{rank:064x}", 0.5, relevance, inliers)


def test_the_reference_gate_lets_verified_or_relevant_references_lend_and_refuses_the_rest() -> None:
    gate = RetrievalSettings(min_relevance=0.75)  # verify.min_inliers 12
    assert lends_texture(_ranked(0, 0.40, 13), gate)  # geometry vouches for it, whatever its relevance
    assert lends_texture(_ranked(0, 0.75, 0), gate)
    assert lends_texture(_ranked(0, 0.80, None), gate)  # verification off: relevance alone decides
    assert not lends_texture(_ranked(0, 0.74, 12), gate)  # 12 inliers is still chance agreement
    assert not lends_texture(_ranked(0, 0.60, None), gate)
    assert lends_texture(_ranked(0, 0.10, None), RetrievalSettings())  # 0: the gate is open


def test_a_refused_reference_leaves_the_chosen_ones_but_keeps_its_scores() -> None:
    chosen = (_ranked(0, 0.90, 40), _ranked(1, 0.60, 3))
    scores = tuple(CandidateScore(r.photo_id, r.sha256, r.cosine, r.inliers, r.cosine, r.relevance, r.rank)
                   for r in chosen)
    gated = gate_references(Ranking(chosen, scores), RetrievalSettings(top_k=2, refs=2, min_relevance=0.75))
    assert gated.chosen == chosen[:1]
    assert [(s.photo_id, s.rank, s.relevance) for s in gated.scores] == [(10, 0, 0.90), (11, None, 0.60)]
    none = gate_references(Ranking(chosen[1:], scores[1:]), RetrievalSettings(min_relevance=0.75))
    assert none.chosen == () and len(none.scores) == 1  # scored, none lends: enhance the target from itself
    assert gate_references(Ranking(chosen, scores), RetrievalSettings(top_k=2, refs=2)).chosen == chosen
