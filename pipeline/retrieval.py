"""Reference retrieval: cosine top-k from the vector index, re-ranked by the texture model's own relevance."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.params import RerankSettings, RetrievalSettings
from pipeline.vector_index import VectorIndex
from ttsr_core.config import MIN_REF_SIDE
from ttsr_core.inference import (
    SCALE,
    autocast_context,
    check_rgb,
    prepare_reference,
    resize_bicubic,
    resolve_device,
    to_tensor,
)
from ttsr_core.net import TTSR
from ttsr_core.search import relevance_at, search_indices

logger = logging.getLogger(__name__)


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


def cosine_candidates(
    index: VectorIndex,
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


def _reduce(image: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 → long side ≤ long_side, area-averaged; never enlarges."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX, reducing_gap=2.0))


def _relevance_features(model: TTSR, image: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Candidate keys: lv3 LTE features of Ref↓↑ → (C, H/4, W/4)."""
    prepared = prepare_reference(image, "candidate")
    return model.LTE(to_tensor(prepared.ref_down_up, dev))[2][0]


def texture_relevance(
    model: TTSR,
    target: np.ndarray,
    candidates: Sequence[np.ndarray],
    settings: RerankSettings = RerankSettings(),
    *,
    device: str | torch.device | None = "cpu",
    amp_dtype: str | None = None,
) -> tuple[float, ...]:
    """Mean soft attention of `target` against each candidate, computed at a small scale.

    target (h, w, 3) uint8; candidates: each (H, W, 3) uint8. Runs only the texture extractor and
    the relevance search (no main network): the query is LTE(LR↑) at lv3, the keys LTE(Ref↓↑) at
    lv3, and the score is the mean over query positions of the best patch's cosine relevance —
    the paper's soft attention S (§3.2), i.e. how much of the target the model can find texture
    for in that photo. Returns one float in [-1, 1] per candidate. A candidate too small to hold
    one texture patch scores -1.
    """
    check_rgb(target, "target")
    dev = resolve_device(device)
    small = _reduce(target, settings.target_side)
    h, w = small.shape[:2]
    model = model.to(dev).eval()
    scores: list[float] = []
    with torch.inference_mode(), autocast_context(dev, amp_dtype):
        lr_up = resize_bicubic(small, w * SCALE, h * SCALE)
        query = model.LTE(to_tensor(lr_up, dev))[2][0].float()  # (C, h, w)
        for i, cand in enumerate(candidates):
            check_rgb(cand, f"candidate {i}")
            reduced = _reduce(cand, settings.candidate_side)
            if min(reduced.shape[:2]) < MIN_REF_SIDE:
                logger.debug("candidate %d of %s is too small to hold a texture patch", i, cand.shape)
                scores.append(-1.0)
                continue
            keys = [_relevance_features(model, reduced, dev).float()]  # (C, H/4, W/4)
            index = search_indices(query, keys, settings.search)  # (h*w,)
            soft = relevance_at(query, keys, index)  # (h*w,)
            value = float(soft.mean())
            scores.append(value if math.isfinite(value) else -1.0)
    return tuple(scores)


def rank_references(
    model: TTSR,
    target: np.ndarray,
    candidates: Sequence[Candidate],
    load: Callable[[Candidate], np.ndarray],
    settings: RetrievalSettings = RetrievalSettings(),
    *,
    device: str | torch.device | None = "cpu",
    amp_dtype: str | None = None,
) -> tuple[RankedReference, ...]:
    """Re-rank cosine `candidates` by texture relevance; return the best `settings.refs`.

    `load(candidate)` returns the candidate's (H, W, 3) uint8 pixels (oriented). Candidates that
    fail to load raise from `load`: the caller decides whether that fails the target. Ties in
    relevance fall back to cosine, then photo id, so the choice is deterministic.
    """
    if not candidates:
        return ()
    pool = list(candidates)[: settings.top_k]
    pixels = [load(c) for c in pool]
    relevance = texture_relevance(model, target, pixels, settings.rerank, device=device, amp_dtype=amp_dtype)
    order = sorted(range(len(pool)), key=lambda i: (-relevance[i], -pool[i].cosine, pool[i].photo_id))
    chosen = order[: settings.refs]
    ranked = tuple(
        RankedReference(
            rank=rank,
            photo_id=pool[i].photo_id,
            sha256=pool[i].sha256,
            cosine=pool[i].cosine,
            relevance=relevance[i],
        )
        for rank, i in enumerate(chosen)
    )
    logger.debug(
        "re-ranked %d candidates: %s",
        len(pool),
        ", ".join(f"{pool[i].photo_id}: cos={pool[i].cosine:.3f} rel={relevance[i]:.3f}" for i in order),
    )
    return ranked
