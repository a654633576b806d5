"""Initial schema: albums, photos, embeddings, runs, enhancements and their references."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written without importing db.models so this revision keeps meaning the same schema after the
# models move on. Enums are plain strings (see db.models._str_enum); datetimes are UTC.
ENUM = sa.String(length=16)
UTC_DATETIME = sa.DateTime(timezone=True)
SHA256 = sa.String(length=64)


def upgrade() -> None:
    op.create_table(
        "albums",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_albums")),
        sa.UniqueConstraint("root", name=op.f("uq_albums_root")),
    )
    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", SHA256, nullable=False),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embeddings")),
        sa.UniqueConstraint("sha256", "embedder", name=op.f("uq_embeddings_sha256_embedder")),
    )
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("album_id", sa.Integer(), nullable=False),
        sa.Column("rel_path", sa.Text(), nullable=False),
        sa.Column("sha256", SHA256, nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(length=32), nullable=True),
        sa.Column("role", ENUM, nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("first_seen", UTC_DATETIME, nullable=False),
        sa.Column("last_seen", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["album_id"], ["albums.id"], name=op.f("fk_photos_album_id_albums")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_photos")),
        sa.UniqueConstraint("album_id", "rel_path", name=op.f("uq_photos_album_id_rel_path")),
    )
    op.create_index(op.f("ix_photos_sha256"), "photos", ["sha256"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_run_id", sa.Text(), nullable=True),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("album_id", sa.Integer(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=False),
        sa.Column("ended_at", UTC_DATETIME, nullable=True),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["album_id"], ["albums.id"], name=op.f("fk_runs_album_id_albums"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_album_id"), "runs", ["album_id"])

    op.create_table(
        "enhancements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("target_photo_id", sa.Integer(), nullable=False),
        sa.Column("target_sha256", SHA256, nullable=False),
        sa.Column("job_key", SHA256, nullable=False),
        sa.Column("output_path", sa.Text(), nullable=True),
        sa.Column("output_sha256", SHA256, nullable=True),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_sha256", SHA256, nullable=False),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("attention_path", sa.Text(), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_enhancements_run_id_runs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["target_photo_id"],
            ["photos.id"],
            name=op.f("fk_enhancements_target_photo_id_photos"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enhancements")),
    )
    # job_key is deliberately not unique: a forced re-run adds a row beside the old one.
    op.create_index(op.f("ix_enhancements_job_key"), "enhancements", ["job_key"])
    op.create_index(op.f("ix_enhancements_output_path"), "enhancements", ["output_path"])
    op.create_index(op.f("ix_enhancements_run_id"), "enhancements", ["run_id"])
    op.create_index(op.f("ix_enhancements_target_photo_id"), "enhancements", ["target_photo_id"])

    op.create_table(
        "enhancement_references",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enhancement_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("ref_photo_id", sa.Integer(), nullable=False),
        sa.Column("ref_sha256", SHA256, nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.Column("relevance", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["enhancement_id"],
            ["enhancements.id"],
            name=op.f("fk_enhancement_references_enhancement_id_enhancements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ref_photo_id"],
            ["photos.id"],
            name=op.f("fk_enhancement_references_ref_photo_id_photos"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enhancement_references")),
        sa.UniqueConstraint(
            "enhancement_id", "rank", name=op.f("uq_enhancement_references_enhancement_id_rank")
        ),
    )
    op.create_index(
        op.f("ix_enhancement_references_ref_photo_id"), "enhancement_references", ["ref_photo_id"]
    )


def downgrade() -> None:
    # Indexes go with their tables.
    op.drop_table("enhancement_references")
    op.drop_table("enhancements")
    op.drop_table("runs")
    op.drop_table("photos")
    op.drop_table("embeddings")
    op.drop_table("albums")
