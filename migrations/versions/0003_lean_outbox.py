"""Leaner outbox: no unique index on event_id, a partial index for unpublished rows.

Every outbox row costs index inserts in the transaction that writes it, and the sweep writes
hundreds of thousands at once. Request ids are 128 random bits made by us (never given
from outside), so the unique index guarded nothing; and only unpublished rows are ever
looked up, so that is all the relay's index needs to hold.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNPUBLISHED = sa.text("published_at IS NULL")


def upgrade() -> None:
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("uq_outbox_event_id", type_="unique")
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=UNPUBLISHED,
        sqlite_where=UNPUBLISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.create_unique_constraint("uq_outbox_event_id", ["event_id"])
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])
