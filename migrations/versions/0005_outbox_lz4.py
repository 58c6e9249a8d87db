"""Outbox messages compressed with lz4 on PostgreSQL.

A sweep chunk queues 20,000 requests as one ~4 MB ``messages`` value; lz4 compresses it
much faster than PostgreSQL's default (pglz), for a slightly larger value
(docs/performance.md). Values already stored keep their compression.
Only where the server was built with lz4 (the setting lists it); SQLite has no such thing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LZ4_AVAILABLE = sa.text(
    "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
)


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and bind.execute(LZ4_AVAILABLE).scalar():
        op.execute(f"ALTER TABLE outbox ALTER COLUMN messages SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
