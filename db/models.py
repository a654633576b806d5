"""SQLAlchemy 2.x typed models for albums, photos, embeddings, runs, enhancements, copies and job claims."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The domain's own words, stored as they are (the one definition of each lives in pipeline).
from pipeline.vocabulary import CredentialsState, EnhancementStatus, PhotoRole

# Deterministic constraint names on every backend, so a later migration can drop or alter
# a constraint by name without reflecting it first.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ENUM_LENGTH = 16


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(UTC)


class PhotoStatus(enum.StrEnum):
    ok = "ok"
    unreadable = "unreadable"
    gone = "gone"


class RunKind(enum.StrEnum):
    index = "index"
    enhance = "enhance"


class RunStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"
    crashed = "crashed"
    stopped = "stopped"  # Ctrl-C: what was done is recorded in its counts


class ClaimStatus(enum.StrEnum):
    claimed = "claimed"  # held until expires_at unless renewed
    released = "released"  # given back unfinished: anyone may claim it at once
    done = "done"  # finished: not claimable again unless the caller asks to redo it


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware-UTC datetimes on every backend.

    SQLite has no time zone type and hands back naive values, so they are stored as naive UTC
    text (which keeps string comparison in SQL correct) and re-tagged as UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _str_enum(cls: type[enum.StrEnum]) -> sa.Enum:
    # Plain VARCHAR without a CHECK constraint: adding a member later needs no migration and
    # no native-enum ALTER TYPE dance on PostgreSQL.
    return sa.Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=ENUM_LENGTH,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Album(Base):
    __tablename__ = "albums"

    id: Mapped[int] = mapped_column(primary_key=True)
    root: Mapped[str] = mapped_column(sa.Text, unique=True)  # absolute path
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    photos: Mapped[list[Photo]] = relationship(back_populates="album")

    def __repr__(self) -> str:
        return f"Album(id={self.id!r}, root={self.root!r})"


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (sa.UniqueConstraint("album_id", "rel_path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    album_id: Mapped[int] = mapped_column(sa.ForeignKey("albums.id"))
    rel_path: Mapped[str] = mapped_column(sa.Text)  # posix, relative to the album root
    sha256: Mapped[str | None] = mapped_column(sa.String(64), index=True)  # None when unreadable
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(sa.BigInteger)
    width: Mapped[int | None] = mapped_column(sa.Integer)  # after EXIF orientation
    height: Mapped[int | None] = mapped_column(sa.Integer)
    format: Mapped[str | None] = mapped_column(sa.String(32))
    role: Mapped[PhotoRole] = mapped_column(_str_enum(PhotoRole), default=PhotoRole.neither)
    status: Mapped[PhotoStatus] = mapped_column(_str_enum(PhotoStatus), default=PhotoStatus.ok)
    error: Mapped[str | None] = mapped_column(sa.Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    album: Mapped[Album] = relationship(back_populates="photos")

    def __repr__(self) -> str:
        return f"Photo(id={self.id!r}, album_id={self.album_id!r}, rel_path={self.rel_path!r})"


class Embedding(Base):
    """One vector per (content hash, embedder): a moved or renamed photo reuses its vector."""

    __tablename__ = "embeddings"
    __table_args__ = (sa.UniqueConstraint("sha256", "embedder"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    embedder: Mapped[str] = mapped_column(sa.Text)
    dim: Mapped[int] = mapped_column(sa.Integer)
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary)  # float32 little-endian, dim * 4 bytes
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Embedding(id={self.id!r}, sha256={self.sha256!r}, embedder={self.embedder!r})"


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_run_id: Mapped[str | None] = mapped_column(sa.Text)
    kind: Mapped[RunKind] = mapped_column(_str_enum(RunKind))
    album_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("albums.id", ondelete="SET NULL"), index=True
    )
    parameters: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    versions: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[RunStatus] = mapped_column(_str_enum(RunStatus), default=RunStatus.running)
    counts: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    error: Mapped[str | None] = mapped_column(sa.Text)

    album: Mapped[Album | None] = relationship()

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"


class Enhancement(Base):
    """One attempt to enhance one target photo; a forced re-run adds a row beside the old one."""

    __tablename__ = "enhancements"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    target_photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), index=True)
    target_sha256: Mapped[str] = mapped_column(sa.String(64))
    # Not unique: --force records a new attempt with the same key next to the old one.
    job_key: Mapped[str] = mapped_column(sa.String(64), index=True)
    output_path: Mapped[str | None] = mapped_column(sa.Text, index=True)
    output_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    model_name: Mapped[str] = mapped_column(sa.Text)
    model_sha256: Mapped[str] = mapped_column(sa.String(64))
    embedder: Mapped[str] = mapped_column(sa.Text)
    device: Mapped[str] = mapped_column(sa.Text)
    params: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    attention_path: Mapped[str | None] = mapped_column(sa.Text)
    # Every candidate retrieval looked at, in its final order: photo_id, sha256, cosine, inliers,
    # verified, relevance, rank (None where the enhancement predates verification).
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON)
    timings: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[EnhancementStatus] = mapped_column(_str_enum(EnhancementStatus))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the output file carries of its own provenance; NULL: failed, or written before credentials.
    credentials: Mapped[CredentialsState | None] = mapped_column(_str_enum(CredentialsState))
    credentials_note: Mapped[str | None] = mapped_column(sa.Text)  # why an asked-for carrier is missing
    # A copy given its original back (pipeline/matching/restore.py): the original's content hash (also the rank-0
    # reference) and how well it fitted: inliers, agreement_db, fidelity_db, scale, covered. NULL: not restored.
    restored_from_sha256: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    restoration: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    run: Mapped[Run | None] = relationship()
    target: Mapped[Photo] = relationship()
    references: Mapped[list[EnhancementReference]] = relationship(
        back_populates="enhancement",
        order_by="EnhancementReference.rank",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    def __repr__(self) -> str:
        return (
            f"Enhancement(id={self.id!r}, target_photo_id={self.target_photo_id!r}, "
            f"status={self.status!r})"
        )


class EnhancementReference(Base):
    """A reference photo that lent texture to an enhancement; rank 0 is the best."""

    __tablename__ = "enhancement_references"
    __table_args__ = (sa.UniqueConstraint("enhancement_id", "rank"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    enhancement_id: Mapped[int] = mapped_column(
        sa.ForeignKey("enhancements.id", ondelete="CASCADE")
    )
    rank: Mapped[int] = mapped_column(sa.Integer)
    ref_photo_id: Mapped[int] = mapped_column(sa.ForeignKey("photos.id"), index=True)
    ref_sha256: Mapped[str] = mapped_column(sa.String(64))
    cosine: Mapped[float] = mapped_column(sa.Float)
    relevance: Mapped[float] = mapped_column(sa.Float)

    enhancement: Mapped[Enhancement] = relationship(back_populates="references")
    photo: Mapped[Photo] = relationship()

    def __repr__(self) -> str:
        return (
            f"EnhancementReference(enhancement_id={self.enhancement_id!r}, rank={self.rank!r}, "
            f"ref_photo_id={self.ref_photo_id!r})"
        )


class CopyCheck(Base):
    """Whether one photo is a copy of another (smaller, recompressed, cropped, lightly edited), by content.

    One row per unordered pair of contents (`sha_a` < `sha_b`) and `method`, so a pair is looked at
    once; when it is a copy, `copy_sha256`/`original_sha256` say which way round.
    """

    __tablename__ = "copy_checks"
    __table_args__ = (sa.UniqueConstraint("sha_a", "sha_b", "method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sha_a: Mapped[str] = mapped_column(sa.String(64), index=True)
    sha_b: Mapped[str] = mapped_column(sa.String(64), index=True)
    method: Mapped[str] = mapped_column(sa.String(32))
    is_copy: Mapped[bool] = mapped_column(sa.Boolean)
    copy_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    original_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    scale: Mapped[float | None] = mapped_column(sa.Float)  # original pixels per copy pixel
    inliers: Mapped[int] = mapped_column(sa.Integer)
    agreement_db: Mapped[float | None] = mapped_column(sa.Float)  # PSNR of the aligned pixels, colour-fitted
    coverage: Mapped[float | None] = mapped_column(sa.Float)  # share of the copy's frame the original shows
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"CopyCheck(sha_a={self.sha_a[:12]!r}, sha_b={self.sha_b[:12]!r}, is_copy={self.is_copy!r})"


class JobClaim(Base):
    """Who works on a job key now, until when, and whether it is finished (see db.claims)."""

    __tablename__ = "job_claims"

    job_key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # Fresh per claim, so a stale handle of an earlier claim cannot renew or settle a later one.
    token: Mapped[str] = mapped_column(sa.String(32))
    owner: Mapped[str] = mapped_column(sa.Text)
    host: Mapped[str] = mapped_column(sa.Text)
    pid: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[ClaimStatus] = mapped_column(_str_enum(ClaimStatus))
    attempts: Mapped[int] = mapped_column(sa.Integer)  # claims in a row that ended unsettled
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"JobClaim(job_key={self.job_key!r}, owner={self.owner!r}, status={self.status!r})"
