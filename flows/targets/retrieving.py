"""References for one target: cosine candidates from the album's index, verified, re-ranked by the model, remembered."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.models import Photo, PhotoRole
from flows.album_config import scan_settings
from flows.common import JsonCache
from flows.features import FeatureCache
from flows.resources import Resources
from flows.targets.jobs import JobContext, RunContext
from pipeline.enhance import stable_hash
from pipeline.hashed_read import load_verified
from pipeline.matching.retrieval import (Candidate, CandidateScore, RankedReference, Ranking, cosine_candidates,
                                        gate_references, rank_candidates, verify_candidates)
from pipeline.params import RetrievalSettings
from pipeline.roles import RelativeRoles, no_reference_reason

if TYPE_CHECKING:
    from pipeline.embedding.vector_index import VectorIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetPhoto:
    """One target as the database knows it, with the album's references it may borrow from."""

    id: int
    rel_path: str
    sha256: str
    vector: np.ndarray | None  # its stored embedding; None when embedding it failed
    references: dict[int, tuple[str, str]]  # reference photo id → (sha256, rel_path)
    long_side: int = 0  # of the displayed photo; 0 when unknown
    reference_sides: dict[int, int] = field(default_factory=dict)  # reference photo id → long side


def load_target(sessions: sessionmaker[Session], job: JobContext, photo_id: int) -> TargetPhoto:
    """The target `photo_id` of the job's album; ValueError when it is not a readable photo."""
    with sessions() as session:
        photo = session.get(Photo, photo_id)
        if photo is None or photo.sha256 is None:
            raise ValueError(f"photo id {photo_id!r} is not a readable photo in the database")
        stored = queries.get_embedding(session, photo.sha256, job.embedder_key)
        found = [p for p in queries.photos(session, job.album_id, role=PhotoRole.reference) if p.sha256]
        refs = {p.id: (p.sha256, p.rel_path) for p in found}
        sides = {p.id: _long_side(p) for p in found}
        vector = None if stored is None else np.frombuffer(stored.vector, dtype="<f4")
        return TargetPhoto(photo.id, photo.rel_path, photo.sha256, vector, refs, _long_side(photo), sides)


def _long_side(photo: Photo) -> int:
    return max(photo.width or 0, photo.height or 0)


@dataclass(frozen=True)
class Retrieval:
    """The references chosen for a target, and how."""

    ranked: tuple[RankedReference, ...]  # best first; empty when there is none (see `missing`)
    scores: tuple[CandidateScore, ...] = ()  # every candidate looked at, in final order
    key: str | None = None  # the re-rank memo key, recorded with the enhancement
    reranked: bool = False  # the model scored the candidates now (no remembered ranking)
    seconds: float = 0.0
    missing: str | None = None  # why there is no reference
    restored_from: str | None = None  # the target is a copy of ranked[0]: restore it from there (with_original)

    @property
    def alone(self) -> bool:
        """Candidates were scored and none passed the reference gate: the target is enhanced from itself."""
        return not self.ranked and bool(self.scores)

    def timings(self) -> dict[str, float]:
        return {"retrieve_s": self.seconds}

    def candidate_records(self) -> list[dict[str, object]]:
        """Each candidate's scores as the enhancement record keeps them."""
        return [s.as_record() for s in self.scores]


class RerankMemo:
    """Re-rank results by what decides them (target, candidates, model, settings): a memo on disk, never the truth."""

    def __init__(self, root: Path) -> None:
        self._cache = JsonCache(root)

    @staticmethod
    def key(target_sha256: str, candidates: Sequence[Candidate], model_sha256: str,
            retrieval: RetrievalSettings) -> str:
        return stable_hash({"target": target_sha256, "candidates": [c.sha256 for c in candidates],
                            "model": model_sha256, "rerank": retrieval.rerank.fingerprint(), "refs": retrieval.refs,
                            "top_k": retrieval.top_k, "verify": retrieval.verify.fingerprint()})

    def get(self, key: str, candidates: Sequence[Candidate]
            ) -> tuple[tuple[RankedReference, ...], tuple[CandidateScore, ...]]:
        """The remembered ranking and scores in terms of these candidates' photo ids; ((), ()) when none is usable."""
        by_sha = {c.sha256: c.photo_id for c in candidates}
        try:
            memo = self._cache.get(key) or {}
            ranked = tuple(
                RankedReference(rank=int(r["rank"]), photo_id=by_sha[r["sha256"]], sha256=r["sha256"],
                                cosine=float(r["cosine"]), relevance=float(r["relevance"]), inliers=r.get("inliers"))
                for r in memo.get("ranked", ())
            )
            scores = tuple(CandidateScore(**{**s, "photo_id": by_sha[s["sha256"]]}) for s in memo.get("scores", ()))
            return ranked, scores
        except (AttributeError, KeyError, TypeError, ValueError):
            return (), ()

    def put(self, key: str, ranked: Sequence[RankedReference], scores: Sequence[CandidateScore]) -> None:
        self._cache.put(key, {"ranked": [asdict(r) for r in ranked], "scores": [asdict(s) for s in scores]})


def _cosine_index(res: Resources, job: JobContext) -> VectorIndex | None:
    """The album's index file where the run saved it; on another machine (a Dask worker), one from the database."""
    if not job.index_host or job.index_host == socket.gethostname():
        return res.vector_index(Path(job.index_path), job.embedder_key)
    return res.database_index(job.album_id, job.embedder_key, version=job.run_id)


def choose_references(res: Resources, run: RunContext, target: TargetPhoto) -> Retrieval:
    """Cosine candidates from the album's vector index, verified geometrically, re-ranked by the model.

    A ranking remembered for the same target, candidates, model and settings is reused unless
    `settings.force`; re-ranking takes one of the process's model slots, in the run's autocast. The
    candidates' local features are cached by content hash (``<home>/cache/features``), so each photo is
    described once.
    """
    t0 = time.perf_counter()
    job, settings = run.job, run.settings
    index = _cosine_index(res, job)
    if target.vector is None:
        raise ValueError(f"{target.rel_path}: no {job.embedder_key} embedding (it failed at indexing)")
    scan = scan_settings(settings, Path(job.album_root))
    eligible = {pid: sha for pid, (sha, _) in target.references.items()
                if scan.ref_ratio is None or RelativeRoles(scan.ref_ratio).can_lend(target.reference_sides.get(pid, 0),
                                                                                    target.long_side)}
    if not eligible:
        return Retrieval((), missing=no_reference_reason(scan.ref_ratio, target.long_side,
                                                         list(target.reference_sides.values()), scan.min_ref_side))
    if index is None or len(index) == 0:
        return Retrieval((), missing="the album's references have no vectors yet (see `refsr index`)")
    retrieval = settings.retrieval()
    wanted = max(retrieval.top_k, retrieval.verify.pool if retrieval.verify.enabled else 0)
    # Ask for enough neighbours that the pair rule's exclusions still leave `wanted` candidates.
    k = min(len(index), wanted + len(target.references) - len(eligible))
    candidates = cosine_candidates(index, target.vector, k, target_id=target.id, target_sha256=target.sha256,
                                   sha256_by_id=eligible)[:wanted]
    if not candidates:
        return Retrieval((), missing="no reference candidate in the album's vector index (run `refsr index` again)")
    root = Path(job.album_root)
    # A reference deleted (or moved) since the scan is dropped, not the target with it.
    present = [c for c in candidates if (root / target.references[c.photo_id][1]).is_file()]
    for gone in sorted(set(candidates) - set(present), key=lambda c: c.photo_id):
        logger.warning("%s: reference candidate %s is gone since the scan; going on without it", target.rel_path,
                       target.references[gone.photo_id][1])
    if not present:
        return Retrieval((), missing="every reference candidate is gone since the scan")
    candidates = present
    memo = RerankMemo(settings.home / "cache" / "rerank")
    key = memo.key(target.sha256, candidates, job.model_sha256, retrieval)
    ranked, scores = ((), ()) if settings.force else memo.get(key, candidates)
    reranked = not ranked
    if reranked:
        model = res.model().model
        # Each photo's pixels are checked against the hash its ranking will be remembered under.
        lr = load_verified(root / target.rel_path, target.sha256)[0]
        cache = FeatureCache(settings.home / "cache" / "features")

        def load(c: Candidate) -> np.ndarray:
            sha, rel = target.references[c.photo_id]
            return load_verified(root / rel, sha)[0]

        # Verification is CPU work: done before taking the device slot, which only the model's scoring needs
        # (a GPU shared by several tasks is not held idle through seconds of feature matching).
        inliers = verify_candidates(lr, candidates, load, retrieval,
                                    features=lambda c: cache.get(c.sha256, lambda: load(c), retrieval.verify))
        with res.device_slot():
            ranking = rank_candidates(model, lr, candidates, load, retrieval, inliers=inliers, device=job.device,
                                      amp_dtype=job.params.amp_dtype)
        ranked, scores = ranking.chosen, ranking.scores
        memo.put(key, ranked, scores)
    # The gate after the memo: the memo keeps the ranking, the gate's threshold is a setting of its own.
    gated = gate_references(Ranking(ranked, scores), retrieval)
    if not gated.chosen:
        best = ranked[0]
        logger.info("%s: no reference lends texture (best %s: relevance %.3f < %.2f, %s inliers); enhanced from "
                    "itself", target.rel_path, target.references[best.photo_id][1], best.relevance,
                    retrieval.min_relevance, best.inliers)
    return Retrieval(gated.chosen, gated.scores, key, reranked, round(time.perf_counter() - t0, 4))


def with_original(sessions: sessionmaker[Session], job: JobContext, target: TargetPhoto, found: Retrieval) -> Retrieval:
    """`found` with the target's original as its first reference, to be restored from, when the target is a copy.

    The original is a photo that copy detection (flows/copies.py) recorded as holding the target's
    picture with more pixels, and that retrieval scored as a candidate (a copy's original is among
    its nearest neighbours, where the detector looked): its recorded scores stay as they were, and
    the other chosen references follow it. `found` unchanged when there is none.
    """
    with sessions() as session:
        scales = {c.original.id: c.check.scale or 0.0 for c in queries.album_copies(session, job.album_id, target.id)
                  if c.copy.sha256 == target.sha256 and (c.check.scale or 0.0) > 1.0}
    scored = {s.photo_id: s for s in found.scores if s.relevance is not None}
    usable = [pid for pid in scales if pid in scored]
    if not usable:
        if scales:
            logger.info("%s: its original is not among the candidates scored; enhanced by the model", target.rel_path)
        return found
    best = scored[max(usable, key=lambda pid: (scales[pid], -pid))]
    relevance = float(best.relevance)  # type: ignore[arg-type]  # `scored` holds re-ranked candidates only
    first = RankedReference(0, best.photo_id, best.sha256, best.cosine, relevance, best.inliers)
    others = [r for r in found.ranked if r.photo_id != best.photo_id][:max(0, len(found.ranked) - 1)]
    ranked = tuple(replace(r, rank=i) for i, r in enumerate([first, *others]))
    ranks = {r.photo_id: r.rank for r in ranked}
    scores = tuple(replace(s, rank=ranks.get(s.photo_id)) for s in found.scores)
    return replace(found, ranked=ranked, scores=scores, restored_from=best.sha256)
