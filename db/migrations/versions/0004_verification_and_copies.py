"""Retrieval's candidate scores on each enhancement, and the album's copies (copy_checks)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written without importing db.models, like 0001, so it keeps meaning this schema later.
UTC = sa.DateTime(timezone=True)
SHA256 = sa.String(length=64)


def upgrade() -> None:
    with op.batch_alter_table("enhancements") as batch:
        batch.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
    op.create_table(
        "copy_checks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha_a", SHA256, nullable=False),
        sa.Column("sha_b", SHA256, nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("is_copy", sa.Boolean(), nullable=False),
        sa.Column("copy_sha256", SHA256, nullable=True),
        sa.Column("original_sha256", SHA256, nullable=True),
        sa.Column("scale", sa.Float(), nullable=True),
        sa.Column("inliers", sa.Integer(), nullable=False),
        sa.Column("agreement_db", sa.Float(), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=True),
        sa.Column("checked_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_copy_checks")),
        sa.UniqueConstraint("sha_a", "sha_b", "method", name=op.f("uq_copy_checks_sha_a_sha_b_method")),
    )
    op.create_index(op.f("ix_copy_checks_sha_a"), "copy_checks", ["sha_a"])
    op.create_index(op.f("ix_copy_checks_sha_b"), "copy_checks", ["sha_b"])


def downgrade() -> None:
    op.drop_index(op.f("ix_copy_checks_sha_b"), table_name="copy_checks")
    op.drop_index(op.f("ix_copy_checks_sha_a"), table_name="copy_checks")
    op.drop_table("copy_checks")
    with op.batch_alter_table("enhancements") as batch:
        batch.drop_column("candidates")
