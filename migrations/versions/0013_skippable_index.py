"""The queued rows a scheduler step may skip as unchanged, indexed (issue 28): the step's
skip query read every queued row on every tick of every worker (5.2-5.6 ms at 50,000
queued, 71-74 ms at 500,000) to find, usually, none. The index holds only rows whose
inputs are what their highlight covers, so the query reads what it may skip.

Building it reads the table once (a plain ``CREATE INDEX``: writes to the highlights wait
for it: 96-117 ms at 500,000 queued rows, docs/performance.md); nothing to backfill.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

H = "user_profile_highlights"
NAME = "ix_user_profile_highlights_regen_skippable"
SKIPPABLE = sa.text(
    "regen_queued_at IS NOT NULL AND covered_fingerprint = input_fingerprint"
    " AND generated_at IS NOT NULL"
)


def upgrade() -> None:
    op.create_index(NAME, H, ["user_id"], postgresql_where=SKIPPABLE, sqlite_where=SKIPPABLE)


def downgrade() -> None:
    op.drop_index(NAME, table_name=H)
