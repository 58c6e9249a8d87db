"""The regeneration scheduler: a durable queue on the highlight rows, a shared budget,
and the deleted comments whose quotes are withheld.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
H = "user_profile_highlights"
QUEUED = sa.text("regen_queued_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table(H) as batch:
        batch.add_column(sa.Column("regen_queued_at", TS, nullable=True))
        batch.add_column(sa.Column("regen_first_change_at", TS, nullable=True))
        batch.add_column(sa.Column("regen_last_change_at", TS, nullable=True))
        batch.add_column(sa.Column("regen_priority", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("regen_queued_reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("regen_queued_trigger", sa.String(200), nullable=True))
        batch.add_column(
            sa.Column("regen_unseen", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    op.create_index(
        "ix_user_profile_highlights_regen_queue",
        H,
        ["regen_priority", "regen_first_change_at"],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )
    op.create_table(
        "regen_budget",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regen_budget")),
    )
    op.create_table(
        "deleted_comments",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("comment_id", sa.String(200), nullable=False),
        sa.Column("deleted_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "comment_id", name=op.f("pk_deleted_comments")),
    )


def downgrade() -> None:
    op.drop_table("deleted_comments")
    op.drop_table("regen_budget")
    op.drop_index("ix_user_profile_highlights_regen_queue", table_name=H)
    with op.batch_alter_table(H) as batch:
        for column in (
            "regen_unseen",
            "regen_queued_trigger",
            "regen_queued_reason",
            "regen_priority",
            "regen_last_change_at",
            "regen_first_change_at",
            "regen_queued_at",
        ):
            batch.drop_column(column)
