"""An operator's pause of the shared regeneration budget, and room for the triggers a
queued request records (a prefix and an event id of up to 200 characters).

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


def upgrade() -> None:
    with op.batch_alter_table("regen_budget") as batch:
        batch.add_column(sa.Column("paused_until", TS, nullable=True))
    with op.batch_alter_table("user_profile_highlights") as batch:
        batch.alter_column("regen_queued_trigger", type_=sa.Text(), existing_type=sa.String(200))


def downgrade() -> None:
    with op.batch_alter_table("user_profile_highlights") as batch:
        batch.alter_column("regen_queued_trigger", type_=sa.String(200), existing_type=sa.Text())
    with op.batch_alter_table("regen_budget") as batch:
        batch.drop_column("paused_until")
