"""Credentials: what provenance each output carries in the file itself (C2PA manifest, XMP), and why not."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain columns, like 0001/0002: the state is pipeline.vocabulary.CredentialsState as VARCHAR(16);
# NULL for failed enhancements and for outputs written before this revision.


def upgrade() -> None:
    with op.batch_alter_table("enhancements") as batch:
        batch.add_column(sa.Column("credentials", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("credentials_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enhancements") as batch:
        batch.drop_column("credentials_note")
        batch.drop_column("credentials")
