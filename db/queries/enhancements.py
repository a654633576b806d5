"""Queries about enhancements: recording one with its ranked references, and finding them again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from db.models import CredentialsState, Enhancement, EnhancementReference, EnhancementStatus, Photo, utcnow
from db.queries.checks import absolute_path, check_sha256


class ReferenceRow(NamedTuple):
    """A reference used by an enhancement, as passed to record_enhancement."""

    rank: int
    ref_photo_id: int
    ref_sha256: str
    cosine: float
    relevance: float


def _with_references(query: Select[tuple[Enhancement]]) -> Select[tuple[Enhancement]]:
    return query.options(
        selectinload(Enhancement.references).joinedload(EnhancementReference.photo),
        joinedload(Enhancement.target),
    )


def _newest_first(query: Select[tuple[Enhancement]]) -> Select[tuple[Enhancement]]:
    return query.order_by(Enhancement.created_at.desc(), Enhancement.id.desc())


def latest_succeeded_enhancement(session: Session, job_key: str) -> Enhancement | None:
    """The newest succeeded enhancement for ``job_key``, if one exists (the cache hit)."""
    query = select(Enhancement).where(
        Enhancement.job_key == job_key, Enhancement.status == EnhancementStatus.succeeded
    )
    return session.scalars(_with_references(_newest_first(query)).limit(1)).first()


def output_hashes(session: Session) -> set[str]:
    """Content hashes of every file an enhancement wrote: a photo with one of them was made by this project."""
    query = select(Enhancement.output_sha256).where(Enhancement.output_sha256.is_not(None)).distinct()
    return set(session.scalars(query))


def _reference_rows(references: Sequence[ReferenceRow | tuple[int, int, str, float, float]]) -> list[ReferenceRow]:
    rows = [ReferenceRow(*row) for row in references]
    ranks = [row.rank for row in rows]
    if len(set(ranks)) != len(ranks) or any(rank < 0 for rank in ranks):
        raise ValueError(f"reference ranks must be distinct and >= 0, got {ranks}")
    for row in rows:
        check_sha256(row.ref_sha256, "ref_sha256")
    return rows


def _check_restored(restored_from_sha256: str | None, rows: Sequence[ReferenceRow]) -> None:
    if restored_from_sha256 is not None:
        check_sha256(restored_from_sha256, "restored_from_sha256")
        if restored_from_sha256 not in {row.ref_sha256 for row in rows}:
            raise ValueError(f"restored_from_sha256 {restored_from_sha256!r} is none of the references")


def record_enhancement(
    session: Session,
    run_id: int | None,
    target_photo: Photo,
    job_key: str,
    *,
    status: EnhancementStatus,
    model_name: str,
    model_sha256: str,
    embedder: str,
    device: str,
    params: dict[str, Any],
    timings: dict[str, Any],
    output_path: str | os.PathLike[str] | None = None,
    output_sha256: str | None = None,
    attention_path: str | os.PathLike[str] | None = None,
    error: str | None = None,
    references: Sequence[ReferenceRow | tuple[int, int, str, float, float]] = (),
    credentials: CredentialsState | None = None,
    credentials_note: str | None = None,
    candidates: Sequence[dict[str, Any]] | None = None,
    restored_from_sha256: str | None = None,
    restoration: dict[str, Any] | None = None,
) -> Enhancement:
    """Add one enhancement and its ranked references in a single flush.

    ``references`` rows are (rank, ref_photo_id, ref_sha256, cosine, relevance) with rank 0 the
    best. ``candidates``: every candidate retrieval scored (JSON-able dicts, as
    ``pipeline.matching.retrieval.CandidateScore.as_record`` gives them), or None. ``restored_from_sha256``: the
    original a copy was restored from (one of the references), with ``restoration`` its fit. Everything lands in the
    caller's transaction together; if the flush fails nothing is written and the caller must roll back.
    """
    final = EnhancementStatus(status)
    check_sha256(job_key, "job_key")
    check_sha256(model_sha256, "model_sha256")
    if target_photo.sha256 is None:
        raise ValueError(f"target photo {target_photo.id} has no sha256 (unreadable?)")
    out = None if output_path is None else absolute_path(output_path, "output_path")
    attention = None if attention_path is None else absolute_path(attention_path, "attention_path")
    if output_sha256 is not None:
        check_sha256(output_sha256, "output_sha256")
    if final is EnhancementStatus.succeeded and (out is None or output_sha256 is None):
        raise ValueError(
            f"a succeeded enhancement needs output_path and output_sha256, got "
            f"{out!r} and {output_sha256!r}"
        )
    rows = _reference_rows(references)
    _check_restored(restored_from_sha256, rows)

    enhancement = Enhancement(
        run_id=run_id,
        target_photo_id=target_photo.id,
        target_sha256=target_photo.sha256,
        job_key=job_key,
        output_path=out,
        output_sha256=output_sha256,
        model_name=model_name,
        model_sha256=model_sha256,
        embedder=embedder,
        device=device,
        params=params,
        attention_path=attention,
        candidates=None if candidates is None else [dict(c) for c in candidates],
        timings=timings,
        status=final,
        error=error,
        credentials=None if credentials is None else CredentialsState(credentials),
        credentials_note=credentials_note,
        restored_from_sha256=restored_from_sha256,
        restoration=None if restoration is None else dict(restoration),
        created_at=utcnow(),
        references=[
            EnhancementReference(rank=row.rank, ref_photo_id=row.ref_photo_id, ref_sha256=row.ref_sha256,
                                 cosine=float(row.cosine), relevance=float(row.relevance))
            for row in sorted(rows)
        ],
    )
    session.add(enhancement)
    session.flush()
    return enhancement


def enhancements_for_output(
    session: Session, output_path: str | os.PathLike[str]
) -> list[Enhancement]:
    """Enhancements that wrote ``output_path``, newest first, with references loaded."""
    query = select(Enhancement).where(
        Enhancement.output_path == absolute_path(output_path, "output_path")
    )
    return list(session.scalars(_with_references(_newest_first(query))).unique())


def enhancements_for_target(session: Session, photo_id: int) -> list[Enhancement]:
    """Every enhancement of one target photo, newest first, with references loaded."""
    query = select(Enhancement).where(Enhancement.target_photo_id == photo_id)
    return list(session.scalars(_with_references(_newest_first(query))).unique())


def enhancements_for_run(session: Session, run_id: int) -> list[Enhancement]:
    """Enhancements recorded by one run in the order they were recorded."""
    query = select(Enhancement).where(Enhancement.run_id == run_id).order_by(Enhancement.id)
    return list(session.scalars(_with_references(query)).unique())


def enhancements_for_album(
    session: Session, album_id: int, latest_only: bool = True
) -> list[Enhancement]:
    """Enhancements of the album's target photos, newest first.

    With ``latest_only`` each target photo contributes only its most recent attempt (whatever
    its status), which is what a gallery or report shows.
    """
    query = (
        select(Enhancement)
        .join(Photo, Photo.id == Enhancement.target_photo_id)
        .where(Photo.album_id == album_id)
    )
    if latest_only:
        # Ids grow with insertion, so the max id per target is its newest attempt; this avoids a
        # window function and ties on equal created_at.
        newest = (
            select(func.max(Enhancement.id))
            .join(Photo, Photo.id == Enhancement.target_photo_id)
            .where(Photo.album_id == album_id)
            .group_by(Enhancement.target_photo_id)
        )
        query = query.where(Enhancement.id.in_(newest))
    return list(session.scalars(_with_references(_newest_first(query))).unique())
