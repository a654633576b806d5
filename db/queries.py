"""Query functions over a caller-owned Session: they add and flush, callers commit."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePath, PurePosixPath
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload, selectinload

from db.models import (
    Album,
    Embedding,
    Enhancement,
    EnhancementReference,
    EnhancementStatus,
    Photo,
    PhotoRole,
    PhotoStatus,
    Run,
    RunKind,
    RunStatus,
    utcnow,
)

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Stays well under SQLite's bound-parameter limit on old builds (999).
_IN_CHUNK = 500

PHOTO_FIELDS = frozenset(
    {
        "sha256",
        "size_bytes",
        "mtime_ns",
        "width",
        "height",
        "format",
        "role",
        "status",
        "error",
        "last_seen",
    }
)


class PhotoVector(NamedTuple):
    """One album photo's stored vector: float32 little-endian bytes."""

    photo_id: int
    sha256: str
    vector: bytes


class ReferenceRow(NamedTuple):
    """A reference used by an enhancement, as passed to record_enhancement."""

    rank: int
    ref_photo_id: int
    ref_sha256: str
    cosine: float
    relevance: float


@dataclass(frozen=True)
class RunSummary:
    """A run with the number of enhancements it recorded, for history views."""

    id: int
    flow_run_id: str | None
    kind: RunKind
    album_id: int | None
    parameters: dict[str, Any]
    versions: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    status: RunStatus
    counts: dict[str, Any] | None
    error: str | None
    succeeded: int
    failed: int


# ---------------------------------------------------------------- validation helpers


def _check_sha256(value: str, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex characters, got {value!r}")
    return value


def _abs_path(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isabs(text):
        raise ValueError(f"{what} must be an absolute path, got {text!r}")
    return os.path.normpath(text)


def _check_rel_path(rel_path: str) -> str:
    pure = PurePosixPath(rel_path)
    if (
        not rel_path
        or pure.is_absolute()
        or pure.as_posix() != rel_path
        or ".." in pure.parts
        or rel_path == "."
    ):
        raise ValueError(f"rel_path must be a normalised relative posix path, got {rel_path!r}")
    return rel_path


def _insert_ignoring_conflict(session: Session, model: type, values: dict[str, Any]) -> None:
    """INSERT that silently loses a race with another process inserting the same unique key.

    Callers re-select afterwards; on a backend without ON CONFLICT the plain insert raises.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing())
    elif dialect == "postgresql":
        session.execute(postgresql.insert(model).values(**values).on_conflict_do_nothing())
    else:
        session.add(model(**values))
        session.flush()


# ---------------------------------------------------------------- albums and photos


def get_album(session: Session, root: str | os.PathLike[str]) -> Album | None:
    """The album registered at absolute path ``root``, if any."""
    return session.scalars(select(Album).where(Album.root == _abs_path(root, "root"))).one_or_none()


def get_or_create_album(session: Session, root: str | os.PathLike[str]) -> Album:
    """The album at absolute path ``root``, created if new (safe against a concurrent creator)."""
    normalised = _abs_path(root, "root")
    album = get_album(session, normalised)
    if album is not None:
        return album
    _insert_ignoring_conflict(session, Album, {"root": normalised, "created_at": utcnow()})
    return session.scalars(select(Album).where(Album.root == normalised)).one()


def photos_by_rel_path(session: Session, album_id: int) -> dict[str, Photo]:
    """Every photo of the album, any status, keyed by rel_path (for a scan to diff against)."""
    rows = session.scalars(select(Photo).where(Photo.album_id == album_id))
    return {photo.rel_path: photo for photo in rows}


def upsert_photo(session: Session, album_id: int, rel_path: str, **fields: Any) -> Photo:
    """Insert or update the photo at ``rel_path`` and mark it seen now.

    ``fields`` are any of PHOTO_FIELDS. ``status`` defaults to ``ok`` and ``last_seen`` to now,
    because an upsert records a sighting (a photo that was ``gone`` and came back is ``ok``).
    Fields not given keep their stored value on update.
    """
    _check_rel_path(rel_path)
    unknown = set(fields) - PHOTO_FIELDS
    if unknown:
        raise ValueError(f"unknown photo fields {sorted(unknown)}; allowed: {sorted(PHOTO_FIELDS)}")
    if fields.get("sha256") is not None:
        _check_sha256(fields["sha256"])
    if "role" in fields:
        fields["role"] = PhotoRole(fields["role"])
    fields["status"] = PhotoStatus(fields.get("status", PhotoStatus.ok))
    now = utcnow()
    fields.setdefault("last_seen", now)

    photo = session.scalars(
        select(Photo).where(Photo.album_id == album_id, Photo.rel_path == rel_path)
    ).one_or_none()
    if photo is None:
        _insert_ignoring_conflict(
            session,
            Photo,
            {
                "album_id": album_id,
                "rel_path": rel_path,
                "role": PhotoRole.neither,
                "first_seen": now,
                **fields,
            },
        )
        photo = session.scalars(
            select(Photo).where(Photo.album_id == album_id, Photo.rel_path == rel_path)
        ).one()
    for name, value in fields.items():
        setattr(photo, name, value)
    session.flush()
    return photo


def mark_gone(session: Session, album_id: int, rel_paths: Iterable[str]) -> int:
    """Mark photos as gone without deleting them, so enhancement history stays intact.

    Returns the number of rows changed.
    """
    paths = list(rel_paths)
    changed = 0
    for start in range(0, len(paths), _IN_CHUNK):
        chunk = paths[start : start + _IN_CHUNK]
        result = session.execute(
            update(Photo)
            .where(
                Photo.album_id == album_id,
                Photo.rel_path.in_(chunk),
                Photo.status != PhotoStatus.gone,
            )
            .values(status=PhotoStatus.gone)
            .execution_options(synchronize_session="fetch")
        )
        changed += result.rowcount
    return changed


def photos(
    session: Session,
    album_id: int,
    role: PhotoRole | None = None,
    status: PhotoStatus | None = PhotoStatus.ok,
) -> list[Photo]:
    """Photos of an album ordered by rel_path; ``role``/``status`` of None means any."""
    query = select(Photo).where(Photo.album_id == album_id)
    if role is not None:
        query = query.where(Photo.role == PhotoRole(role))
    if status is not None:
        query = query.where(Photo.status == PhotoStatus(status))
    return list(session.scalars(query.order_by(Photo.rel_path)))


def photo_by_path(session: Session, abs_path: str | os.PathLike[str]) -> Photo | None:
    """The photo stored for an absolute file path, searching the innermost album first."""
    path = PurePath(_abs_path(abs_path, "abs_path"))
    ancestors = [str(parent) for parent in path.parents]
    albums = session.scalars(select(Album).where(Album.root.in_(ancestors))).all()
    # Nested albums: the deepest root is the most specific owner of the file.
    for album in sorted(albums, key=lambda a: len(a.root), reverse=True):
        rel_path = path.relative_to(album.root).as_posix()
        photo = session.scalars(
            select(Photo).where(Photo.album_id == album.id, Photo.rel_path == rel_path)
        ).one_or_none()
        if photo is not None:
            return photo
    return None


# ---------------------------------------------------------------- embeddings


def get_embedding(session: Session, sha256: str, embedder: str) -> Embedding | None:
    """The stored vector for content ``sha256`` under ``embedder``, if any."""
    return session.scalars(
        select(Embedding).where(Embedding.sha256 == sha256, Embedding.embedder == embedder)
    ).one_or_none()


def add_embedding(
    session: Session, sha256: str, embedder: str, vector: bytes, dim: int
) -> Embedding:
    """Store a float32 little-endian vector of ``dim`` values; the first writer wins a race.

    Returns the stored row, which is the existing one when the key was already present.
    """
    _check_sha256(sha256)
    if not embedder:
        raise ValueError(f"embedder must be a non-empty key, got {embedder!r}")
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    data = bytes(vector)
    if len(data) != 4 * dim:
        raise ValueError(f"vector has {len(data)} bytes, expected {4 * dim} for dim={dim} float32")
    existing = get_embedding(session, sha256, embedder)
    if existing is not None:
        return existing
    _insert_ignoring_conflict(
        session,
        Embedding,
        {
            "sha256": sha256,
            "embedder": embedder,
            "dim": dim,
            "vector": data,
            "created_at": utcnow(),
        },
    )
    stored = get_embedding(session, sha256, embedder)
    if stored is None:  # pragma: no cover - the insert or a concurrent one must have landed
        raise RuntimeError(f"embedding ({sha256}, {embedder}) vanished after insert")
    return stored


def embeddings_for_album(
    session: Session, album_id: int, embedder: str, role: PhotoRole | None = None
) -> list[PhotoVector]:
    """Vectors of the album's ok photos that have one, ordered by photo id.

    Two photos with the same content each get a row (sharing the vector), so FAISS ids can be
    photo ids.
    """
    query = (
        select(Photo.id, Photo.sha256, Embedding.vector)
        .join(
            Embedding,
            and_(Embedding.sha256 == Photo.sha256, Embedding.embedder == embedder),
        )
        .where(Photo.album_id == album_id, Photo.status == PhotoStatus.ok)
    )
    if role is not None:
        query = query.where(Photo.role == PhotoRole(role))
    rows = session.execute(query.order_by(Photo.id))
    return [PhotoVector(photo_id, sha, bytes(vec)) for photo_id, sha, vec in rows]


# ---------------------------------------------------------------- runs


def start_run(
    session: Session,
    kind: RunKind,
    album_id: int | None,
    parameters: dict[str, Any],
    versions: dict[str, Any],
    flow_run_id: str | None = None,
) -> Run:
    """Record a run as running now; commit soon so other processes can see it."""
    run = Run(
        kind=RunKind(kind),
        album_id=album_id,
        parameters=parameters,
        versions=versions,
        flow_run_id=flow_run_id,
        status=RunStatus.running,
        started_at=utcnow(),
    )
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    run: Run,
    status: RunStatus,
    counts: dict[str, Any] | None = None,
    error: str | None = None,
) -> Run:
    """Close a run with a final status, optional counts and a one-line error."""
    final = RunStatus(status)
    if final is RunStatus.running:
        raise ValueError(f"finish_run needs a final status, got {final!r}")
    run.status = final
    run.ended_at = utcnow()
    if counts is not None:
        run.counts = counts
    if error is not None:
        run.error = error
    session.flush()
    return run


def mark_stale_runs_crashed(session: Session, older_than: timedelta | datetime) -> int:
    """Mark runs still 'running' that started before a cutoff as crashed.

    ``older_than`` is an age (timedelta) or an aware cutoff datetime. Returns how many changed.
    """
    if isinstance(older_than, timedelta):
        cutoff = utcnow() - older_than
    elif isinstance(older_than, datetime):
        if older_than.tzinfo is None:
            raise ValueError(f"older_than must be timezone-aware, got {older_than!r}")
        cutoff = older_than
    else:
        raise TypeError(f"older_than must be a timedelta or datetime, got {older_than!r}")
    stale = session.scalars(
        select(Run).where(Run.status == RunStatus.running, Run.started_at < cutoff)
    ).all()
    now = utcnow()
    for run in stale:
        run.status = RunStatus.crashed
        run.ended_at = now
        run.error = run.error or f"still running at {now.isoformat()}: its process stopped"
    session.flush()
    if stale:
        logger.info("marked %d stale runs crashed: %s", len(stale), [r.id for r in stale])
    return len(stale)


def run_history(
    session: Session, album_id: int | None = None, limit: int | None = None
) -> list[RunSummary]:
    """Runs newest first, each with counts of succeeded and failed enhancements."""
    tally = (
        select(
            Enhancement.run_id.label("run_id"),
            func.sum(case((Enhancement.status == EnhancementStatus.succeeded, 1), else_=0)).label(
                "succeeded"
            ),
            func.sum(case((Enhancement.status == EnhancementStatus.failed, 1), else_=0)).label(
                "failed"
            ),
        )
        .where(Enhancement.run_id.is_not(None))
        .group_by(Enhancement.run_id)
        .subquery()
    )
    query = select(
        Run, func.coalesce(tally.c.succeeded, 0), func.coalesce(tally.c.failed, 0)
    ).outerjoin(tally, tally.c.run_id == Run.id)
    if album_id is not None:
        query = query.where(Run.album_id == album_id)
    query = query.order_by(Run.started_at.desc(), Run.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [
        RunSummary(
            id=run.id,
            flow_run_id=run.flow_run_id,
            kind=run.kind,
            album_id=run.album_id,
            parameters=run.parameters,
            versions=run.versions,
            started_at=run.started_at,
            ended_at=run.ended_at,
            status=run.status,
            counts=run.counts,
            error=run.error,
            succeeded=int(succeeded),
            failed=int(failed),
        )
        for run, succeeded, failed in session.execute(query)
    ]


# ---------------------------------------------------------------- enhancements


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
) -> Enhancement:
    """Add one enhancement and its ranked references in a single flush.

    ``references`` rows are (rank, ref_photo_id, ref_sha256, cosine, relevance) with rank 0 the
    best. Everything lands in the caller's transaction together; if the flush fails nothing is
    written and the caller must roll back.
    """
    final = EnhancementStatus(status)
    _check_sha256(job_key, "job_key")
    _check_sha256(model_sha256, "model_sha256")
    if target_photo.sha256 is None:
        raise ValueError(f"target photo {target_photo.id} has no sha256 (unreadable?)")
    out = None if output_path is None else _abs_path(output_path, "output_path")
    attention = None if attention_path is None else _abs_path(attention_path, "attention_path")
    if output_sha256 is not None:
        _check_sha256(output_sha256, "output_sha256")
    if final is EnhancementStatus.succeeded and (out is None or output_sha256 is None):
        raise ValueError(
            f"a succeeded enhancement needs output_path and output_sha256, got "
            f"{out!r} and {output_sha256!r}"
        )
    rows = [ReferenceRow(*row) for row in references]
    ranks = [row.rank for row in rows]
    if len(set(ranks)) != len(ranks) or any(rank < 0 for rank in ranks):
        raise ValueError(f"reference ranks must be distinct and >= 0, got {ranks}")
    for row in rows:
        _check_sha256(row.ref_sha256, "ref_sha256")

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
        timings=timings,
        status=final,
        error=error,
        created_at=utcnow(),
        references=[
            EnhancementReference(
                rank=row.rank,
                ref_photo_id=row.ref_photo_id,
                ref_sha256=row.ref_sha256,
                cosine=float(row.cosine),
                relevance=float(row.relevance),
            )
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
        Enhancement.output_path == _abs_path(output_path, "output_path")
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
