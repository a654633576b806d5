"""Copies in an album: each photo's nearest neighbours by embedding checked by pipeline.matching.copies, verdicts kept by content."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from db import queries
from db.models import Photo
from flows.common import is_transient, one_line, retry_if_transient
from flows.features import FeatureCache
from flows.resources import resources_for
from flows.settings import Settings
from pipeline.hashed_read import load_verified
from pipeline.matching.copies import COPY_METHOD, CopySettings, check_copy
from pipeline.params import VerifySettings

logger = logging.getLogger(__name__)

# A photo's copy is among its nearest neighbours by embedding (cosine ≥ 0.99 for reduced copies,
# lower for crops and colour edits): checking a few per photo keeps the album's cost linear.
NEIGHBOURS = 3


@dataclass(frozen=True)
class CopyFound:
    """One copy as the summaries and `refsr copies` print it."""

    copy: str  # rel_path
    original: str
    scale: float | None
    inliers: int
    agreement_db: float | None


@dataclass(frozen=True)
class CopyScan:
    checked: int  # pairs looked at now (each pair of contents is looked at once)
    copies: tuple[CopyFound, ...]  # every copy in the album now
    failed: int = 0


def neighbour_pairs(vectors: np.ndarray, k: int = NEIGHBOURS) -> set[tuple[int, int]]:
    """(i, j), i < j, for each row's `k` nearest other rows by inner product ((n, dim) L2-normalised rows)."""
    n = vectors.shape[0]
    if n < 2:
        return set()
    sims = vectors @ vectors.T  # (n, n)
    np.fill_diagonal(sims, -np.inf)
    k = min(k, n - 1)
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n, k)
    return {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in nearest[i]}


def find_copies(album_id: int, album_root: str, embedder_key: str, settings: Settings) -> CopyScan:
    """Check each photo of the album against its nearest neighbours not checked before; the album's copies."""
    res = resources_for(settings)
    root = Path(album_root)
    with res.sessions() as session:
        rows = queries.embeddings_for_album(session, album_id, embedder_key)
        photos = {p.id: p for p in queries.photos(session, album_id)}
        # One representative photo per content: two files with one content are not copies, they are one.
        by_sha: dict[str, tuple[int, bytes]] = {}
        for r in rows:
            by_sha.setdefault(r.sha256, (r.photo_id, r.vector))
        shas = sorted(by_sha)
        done = queries.checked_pairs(session, COPY_METHOD, set(shas))
    vectors = np.stack([np.frombuffer(by_sha[s][1], dtype="<f4") for s in shas]) if shas else np.zeros((0, 1))
    todo = [(shas[i], shas[j]) for i, j in sorted(neighbour_pairs(vectors))
            if (shas[i], shas[j]) not in done]
    features = FeatureCache(settings.home / "cache" / "features")
    verify = VerifySettings()
    checked = failed = 0
    for sha_a, sha_b in todo:
        pa, pb = photos[by_sha[sha_a][0]], photos[by_sha[sha_b][0]]
        try:
            verdict = _check(root, pa, pb, features, verify)
        except Exception as exc:
            if is_transient(exc):
                raise
            logger.warning("copy check of %s and %s failed: %s", pa.rel_path, pb.rel_path, one_line(exc))
            failed += 1
            continue
        copy_sha = None if verdict.copy is None else (sha_a, sha_b)[verdict.copy]
        with res.sessions.begin() as session:
            queries.record_copy_check(session, sha_a, sha_b, COPY_METHOD, is_copy=verdict.is_copy,
                                      copy_sha256=copy_sha, scale=verdict.scale, inliers=verdict.inliers,
                                      agreement_db=verdict.agreement_db, coverage=verdict.coverage)
        checked += 1
        if verdict.is_copy:
            logger.info("%s is a copy of %s", *((pa.rel_path, pb.rel_path) if verdict.copy == 0
                                                  else (pb.rel_path, pa.rel_path)))
    return CopyScan(checked, album_copies(settings, album_id), failed)


def _check(root: Path, pa: Photo, pb: Photo, features: FeatureCache, verify: VerifySettings):  # type: ignore[no-untyped-def]
    # The pixels must be the bytes the photo's hash names: a verdict (and features) recorded under that
    # hash from a file replaced since the scan would stand for the pair for good (each pair is checked once).
    def load(p: Photo):  # type: ignore[no-untyped-def]
        return lambda: load_verified(root / p.rel_path, p.sha256)[0]

    fa = features.get(pa.sha256 or "", load(pa), verify)
    fb = features.get(pb.sha256 or "", load(pb), verify)
    return check_copy(load(pa), fa, load(pb), fb, CopySettings(), bytes_a=pa.size_bytes or 0,
                      bytes_b=pb.size_bytes or 0)


def album_copies(settings: Settings, album_id: int, photo_id: int | None = None) -> tuple[CopyFound, ...]:
    """The album's copies as recorded (no pixels read): all, or those of one photo."""
    with resources_for(settings).sessions() as session:
        return tuple(CopyFound(c.copy.rel_path, c.original.rel_path, c.check.scale, c.check.inliers,
                               c.check.agreement_db)
                     for c in queries.album_copies(session, album_id, photo_id))


@task(name="find-copies", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_if_transient)
def copies_task(album_id: int, album_root: str, embedder_key: str, settings: Settings) -> CopyScan:
    """Copies among the album's photos (thin wrapper; see find_copies)."""
    return find_copies(album_id, album_root, embedder_key, settings)
