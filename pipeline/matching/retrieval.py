"""Reference retrieval: cosine top-k from the vector index, verified geometrically, re-ranked by the model's relevance."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from pipeline.images import shrink
from pipeline.matching.verification import (LocalFeatures, local_features, verification_bonus, verify_pair,
                                           vouches)
from pipeline.params import RerankSettings, RetrievalSettings
from ttsr_core.arrays import check_rgb, resize_bicubic
from ttsr_core.config import MIN_REF_SIDE, SCALE, Precision
from ttsr_core.device import autocast, resolve_device
from ttsr_core.model.inference import inference_model, prepare_reference, to_tensor
from ttsr_core.model.net import TTSR

logger = logging.getLogger(__name__)


class CosineIndex(Protocol):
    """What retrieval needs of a vector index (``pipeline.embedding.vector_index.VectorIndex`` is one)."""

    def search(
        self, vectors: np.ndarray, k: int, exclude_ids: Collection[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosine neighbours of (nq, dim) queries → scores (nq, k), ids (nq, k), -1 where none."""
        ...


@dataclass(frozen=True)
class Candidate:
    """A reference photo found by cosine similarity of embeddings."""

    photo_id: int
    sha256: str
    cosine: float


@dataclass(frozen=True)
class RankedReference:
    """A chosen reference with both scores; rank 0 is the best."""

    rank: int
    photo_id: int
    sha256: str
    cosine: float  # embedding similarity in [-1, 1]
    relevance: float  # mean soft attention of the target against this photo, in [-1, 1]
    inliers: int | None = None  # feature matches one geometry explains; None when not verified


@dataclass(frozen=True)
class CandidateScore:
    """Everything retrieval knew of one candidate: what provenance records for each."""

    photo_id: int
    sha256: str
    cosine: float
    inliers: int | None  # None: not verified (verification off)
    verified: float  # cosine + verification bonus: the order the relevance pool is drawn from
    relevance: float | None  # None: outside the pool the model re-ranked
    rank: int | None  # its place among the chosen references; None when not chosen

    def as_record(self) -> dict[str, object]:
        return {"photo_id": self.photo_id, "sha256": self.sha256, "cosine": round(self.cosine, 6),
                "inliers": self.inliers, "verified": round(self.verified, 6),
                "relevance": None if self.relevance is None else round(self.relevance, 6), "rank": self.rank}


@dataclass(frozen=True)
class Ranking:
    """The chosen references, and every candidate's scores in final order (best first)."""

    chosen: tuple[RankedReference, ...]
    scores: tuple[CandidateScore, ...]


def cosine_candidates(
    index: CosineIndex,
    query: np.ndarray,
    k: int,
    *,
    target_id: int,
    target_sha256: str,
    sha256_by_id: Mapping[int, str],
) -> tuple[Candidate, ...]:
    """Top-k reference candidates of one target by cosine, best first.

    query (dim,) or (1, dim) float32. Never returns the target itself nor any photo with the same
    content (sha256): a byte-identical copy lends nothing. A different file of the same scene —
    a higher-resolution original of a thumbnail — is kept: it is the best reference there is.
    `sha256_by_id` maps every indexed photo id to its content hash; ids missing from it are
    skipped (a photo gone since the index was written).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    same_content = {pid for pid, sha in sha256_by_id.items() if sha == target_sha256}
    exclude = same_content | {int(target_id)}
    scores, ids = index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, exclude_ids=exclude)
    out: list[Candidate] = []
    for score, pid in zip(scores[0].tolist(), ids[0].tolist()):
        if pid < 0 or pid not in sha256_by_id:
            continue
        out.append(Candidate(photo_id=int(pid), sha256=sha256_by_id[pid], cosine=float(score)))
    return tuple(out)


def texture_relevance(
    model: TTSR,
    target: np.ndarray,
    candidates: Sequence[np.ndarray],
    settings: RerankSettings = RerankSettings(),
    *,
    device: str | torch.device | None = "cpu",
    amp_dtype: Precision | None = None,
) -> tuple[float, ...]:
    """Mean soft attention of `target` against each candidate, computed at a small scale.

    target (h, w, 3) uint8; candidates: each (H, W, 3) uint8, area-averaged down to
    `settings.candidate_side` (the target to `target_side`), never enlarged. The score is
    :meth:`TTSR.relevance` averaged over query positions: how much of the target the model can
    find texture for in that photo. Returns one float in [-1, 1] per candidate; a candidate too
    small to hold one texture patch scores -1. The caller's model is not changed (it runs as it is
    when prepared for `device`, else on a prepared copy).
    """
    check_rgb(target, "target")
    dev = resolve_device(device)
    small = shrink(target, settings.target_side, Image.Resampling.BOX, 2.0)
    h, w = small.shape[:2]
    model = inference_model(model, dev)
    scores = [-1.0] * len(candidates)
    keys: dict[int, torch.Tensor] = {}  # candidate number → Ref↓↑ (1, 3, H, W)
    with torch.inference_mode(), autocast(dev, amp_dtype):
        lr_up = to_tensor(resize_bicubic(small, w * SCALE, h * SCALE), dev)
        for i, cand in enumerate(candidates):
            check_rgb(cand, f"candidate {i}")
            reduced = shrink(cand, settings.candidate_side, Image.Resampling.BOX, 2.0)
            if min(reduced.shape[:2]) < MIN_REF_SIDE:
                logger.debug("candidate %d of %s is too small to hold a texture patch", i, cand.shape)
                continue
            keys[i] = to_tensor(prepare_reference(reduced, "candidate").ref_down_up, dev)
        soft = model.relevance(lr_up, list(keys.values()), settings.search)  # each (h*w,)
    for i, attention in zip(keys, soft):
        value = float(attention.mean())
        scores[i] = value if math.isfinite(value) else -1.0
    return tuple(scores)


def lends_texture(ref: RankedReference, settings: RetrievalSettings) -> bool:
    """Whether a chosen reference may lend its texture to the target: the reference gate.

    A different photograph of the target's subject helps; a photo of something else does not, yet the
    model still pastes some of its high frequencies (benchmarks/reference_gate.py measures both on the
    different-photograph yardstick). A reference lends when geometry vouches for it (more than
    `verify.min_inliers` inliers) or when the model finds the target's texture in it (mean relevance ≥
    `min_relevance`); otherwise the target is better enhanced from itself alone.
    """
    if settings.min_relevance <= 0 or vouches(ref.inliers, settings.verify):
        return True
    return ref.relevance >= settings.min_relevance


def gate_references(ranking: Ranking, settings: RetrievalSettings) -> Ranking:
    """`ranking` with only the chosen references that lend texture (:func:`lends_texture`).

    Verified references come first and the rest by relevance, so those kept are the first ones and
    keep their ranks; a refused one stays among the scores, unranked. An empty `chosen` with scores
    means: candidates were looked at and none is like the target; enhance it from itself.
    """
    kept = tuple(r for r in ranking.chosen if lends_texture(r, settings))
    if len(kept) == len(ranking.chosen):
        return ranking
    ranks = {r.photo_id: r.rank for r in kept}
    scores = tuple(replace(s, rank=ranks.get(s.photo_id)) for s in ranking.scores)
    return Ranking(kept, scores)


def _pool(candidates: Sequence[Candidate], settings: RetrievalSettings) -> list[Candidate]:
    """The best-cosine candidates that are verified and ranked: `verify.pool` of them, at least `top_k`."""
    verify = settings.verify
    return list(candidates)[: max(settings.top_k, verify.pool if verify.enabled else 0)]


def verify_candidates(
    target: np.ndarray,
    candidates: Sequence[Candidate],
    load: Callable[[Candidate], np.ndarray],
    settings: RetrievalSettings = RetrievalSettings(),
    *,
    features: Callable[[Candidate], LocalFeatures] | None = None,
) -> list[int | None]:
    """Inliers of each candidate of the pool :func:`rank_candidates` looks at; None where not verified.

    CPU work (SIFT, MAGSAC++) that needs no accelerator: a caller holding a GPU slot for the model
    runs this before taking it.
    """
    verify = settings.verify
    pool = _pool(candidates, settings)
    if not verify.enabled:
        return [None] * len(pool)
    mine = local_features(target, verify)
    out: list[int | None] = []
    for cand in pool:
        theirs = features(cand) if features is not None else local_features(load(cand), verify)
        out.append(verify_pair(mine, theirs, verify).inliers)
    return out


def rank_candidates(
    model: TTSR,
    target: np.ndarray,
    candidates: Sequence[Candidate],
    load: Callable[[Candidate], np.ndarray],
    settings: RetrievalSettings = RetrievalSettings(),
    *,
    features: Callable[[Candidate], LocalFeatures] | None = None,
    inliers: Sequence[int | None] | None = None,
    device: str | torch.device | None = "cpu",
    amp_dtype: Precision | None = None,
) -> Ranking:
    """Verify cosine `candidates` geometrically, re-rank the best `top_k` by texture relevance; keep `refs`.

    `candidates` come best-cosine first; the first `settings.verify.pool` are matched against the
    target (pipeline.matching.verification) and ordered by cosine + verification bonus. Of that order the
    first `top_k` are scored by the model's texture relevance: candidates that verification vouches
    for (bonus > 0) keep their verified order in front — matches that one geometry explains are
    better evidence of the same place than texture likeness (benchmarks/RETRIEVAL.md) — and the rest
    follow by relevance, then cosine, then photo id. `load(candidate)` returns (H, W, 3) uint8;
    `features(candidate)` its local features (a cache), else they are computed from `load`;
    `inliers`: what :func:`verify_candidates` returned for these candidates, if the caller ran it already.
    """
    if not candidates:
        return Ranking((), ())
    verify = settings.verify
    pool = _pool(candidates, settings)
    if inliers is None:
        inliers = verify_candidates(target, candidates, load, settings, features=features)
    if len(inliers) != len(pool):
        raise ValueError(f"{len(inliers)} inlier counts for a pool of {len(pool)} candidates")
    bonus = [0.0 if n is None else verification_bonus(n, verify) for n in inliers]
    verified = [c.cosine + b for c, b in zip(pool, bonus)]
    order = sorted(range(len(pool)), key=lambda i: (-verified[i], -pool[i].cosine, pool[i].photo_id))
    head, tail = order[: settings.top_k], order[settings.top_k:]
    relevance = dict(zip(head, texture_relevance(model, target, [load(pool[i]) for i in head], settings.rerank,
                                                 device=device, amp_dtype=amp_dtype)))
    sure = [i for i in head if bonus[i] > 0]
    rest = sorted((i for i in head if bonus[i] <= 0),
                  key=lambda i: (-relevance[i], -pool[i].cosine, pool[i].photo_id))
    final = sure + rest + tail
    chosen = final[: settings.refs]
    ranked = tuple(
        RankedReference(rank=rank, photo_id=pool[i].photo_id, sha256=pool[i].sha256, cosine=pool[i].cosine,
                        relevance=relevance[i], inliers=inliers[i])
        for rank, i in enumerate(chosen)
    )
    scores = tuple(
        CandidateScore(photo_id=pool[i].photo_id, sha256=pool[i].sha256, cosine=pool[i].cosine,
                       inliers=inliers[i], verified=verified[i], relevance=relevance.get(i),
                       rank=chosen.index(i) if i in chosen else None)
        for i in final
    )
    logger.debug("ranked %d candidates: %s", len(pool), ", ".join(
        f"{pool[i].photo_id}: cos={pool[i].cosine:.3f} inl={inliers[i]} rel={relevance.get(i)}" for i in final))
    return Ranking(ranked, scores)

