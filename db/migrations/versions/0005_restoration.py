"""An enhancement restored from the target's original: which original, and how well it fitted."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("enhancements") as batch:
        batch.add_column(sa.Column("restored_from_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("restoration", sa.JSON(), nullable=True))
        batch.create_index(op.f("ix_enhancements_restored_from_sha256"), ["restored_from_sha256"])


def downgrade() -> None:
    with op.batch_alter_table("enhancements") as batch:
        batch.drop_index(op.f("ix_enhancements_restored_from_sha256"))
        batch.drop_column("restoration")
        batch.drop_column("restored_from_sha256")
