"""An operator's pause of the shared regeneration budget; room for the triggers a queued
request records (a prefix and an event id of up to 200 characters); the queue's index in
the scheduler's order (a step sorted the whole queue every tick: 136 ms at 100,000 queued).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
H = "user_profile_highlights"
QUEUED = sa.text("regen_queued_at IS NOT NULL")
ORDERED = "ix_user_profile_highlights_regen_queue_order"
UNORDERED = "ix_user_profile_highlights_regen_queue"


def upgrade() -> None:
    with op.batch_alter_table("regen_budget") as batch:
        batch.add_column(sa.Column("paused_until", TS, nullable=True))
    with op.batch_alter_table(H) as batch:
        batch.alter_column("regen_queued_trigger", type_=sa.Text(), existing_type=sa.String(200))
    op.drop_index(UNORDERED, table_name=H)
    columns = ["regen_priority", sa.text("regen_unseen DESC"), "regen_first_change_at", "user_id"]
    op.create_index(ORDERED, H, columns, postgresql_where=QUEUED, sqlite_where=QUEUED)


def downgrade() -> None:
    op.drop_index(ORDERED, table_name=H)
    columns = ["regen_priority", "regen_first_change_at"]
    op.create_index(UNORDERED, H, columns, postgresql_where=QUEUED, sqlite_where=QUEUED)
    with op.batch_alter_table(H) as batch:
        batch.alter_column("regen_queued_trigger", type_=sa.String(200), existing_type=sa.Text())
    with op.batch_alter_table("regen_budget") as batch:
        batch.drop_column("paused_until")
