"""Admin sessions stored server-side, so that logging out ends a session everywhere.

A session cookie names a row here (by the SHA-256 of its random id); logout deletes the
row, so a copied cookie stops working at once instead of living until it expires.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("token_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_admin_sessions")),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["admin_tokens.id"],
            name=op.f("fk_admin_sessions_token_id_admin_tokens"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_admin_sessions_expires_at"), "admin_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_sessions_expires_at"), table_name="admin_sessions")
    op.drop_table("admin_sessions")
