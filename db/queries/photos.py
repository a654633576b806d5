"""Queries about albums, their photos and the photos' stored vectors."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any, NamedTuple

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from db.models import Album, Embedding, Photo, PhotoRole, PhotoStatus, utcnow
from db.queries.checks import absolute_path, check_rel_path, check_sha256, insert_ignoring_conflict

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


def get_album(session: Session, root: str | os.PathLike[str]) -> Album | None:
    """The album registered at absolute path ``root``, if any."""
    return session.scalars(select(Album).where(Album.root == absolute_path(root, "root"))).one_or_none()


def get_or_create_album(session: Session, root: str | os.PathLike[str]) -> Album:
    """The album at absolute path ``root``, created if new (safe against a concurrent creator)."""
    normalised = absolute_path(root, "root")
    album = get_album(session, normalised)
    if album is not None:
        return album
    insert_ignoring_conflict(session, Album, {"root": normalised, "created_at": utcnow()})
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
    check_rel_path(rel_path)
    unknown = set(fields) - PHOTO_FIELDS
    if unknown:
        raise ValueError(f"unknown photo fields {sorted(unknown)}; allowed: {sorted(PHOTO_FIELDS)}")
    if fields.get("sha256") is not None:
        check_sha256(fields["sha256"])
    if "role" in fields:
        fields["role"] = PhotoRole(fields["role"])
    fields["status"] = PhotoStatus(fields.get("status", PhotoStatus.ok))
    now = utcnow()
    fields.setdefault("last_seen", now)

    photo = session.scalars(
        select(Photo).where(Photo.album_id == album_id, Photo.rel_path == rel_path)
    ).one_or_none()
    if photo is None:
        insert_ignoring_conflict(
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
    path = PurePath(absolute_path(abs_path, "abs_path"))
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
    check_sha256(sha256)
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
    insert_ignoring_conflict(
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
