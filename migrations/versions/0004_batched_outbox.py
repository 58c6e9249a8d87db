"""Batched outbox: one row per transaction and topic, deleted once published.

The sweep queued one outbox row per expired highlight (300k rows for 300k expiries, each
with its index entries); a comment batch one per request. A row now holds every message its
transaction queued, one per line as ``key<TAB>json``, and the relay deletes rows once the
broker acked them, so the table holds only the backlog. Unpublished rows are carried over
(as batches of one, and back again on downgrade); published ones were history only.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNPUBLISHED = sa.text("published_at IS NULL")
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
OLD_COLUMNS = {"event_id": sa.String(64), "key": sa.String(200), "payload": JSON_DOC}


def upgrade() -> None:
    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("messages", sa.Text(), nullable=True))
        batch.add_column(sa.Column("message_count", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE outbox SET message_count = 1, messages = key || '\t' || CAST(payload AS TEXT)"
    )
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("messages", existing_type=sa.Text(), nullable=False)
        batch.alter_column("message_count", existing_type=sa.Integer(), nullable=False)
        for column in ("event_id", "key", "payload", "published_at"):
            batch.drop_column(column)


def downgrade() -> None:
    """Back to one row per message (payloads re-parsed from their JSON text)."""
    batches = op.get_bind().execute(
        sa.text("SELECT topic, messages, created_at FROM outbox ORDER BY id")
    )
    rows = [
        _old_row(topic, line, created_at)
        for topic, messages, created_at in batches.all()
        for line in messages.split("\n")
    ]
    op.execute("DELETE FROM outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("messages")
        batch.drop_column("message_count")
        for name, type_ in OLD_COLUMNS.items():
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))
    if rows:
        columns = [sa.column(name, type_) for name, type_ in OLD_COLUMNS.items()]
        table = sa.table("outbox", sa.column("topic"), sa.column("created_at"), *columns)
        op.bulk_insert(table, rows)
    with op.batch_alter_table("outbox") as batch:
        for name, type_ in OLD_COLUMNS.items():
            batch.alter_column(name, existing_type=type_, nullable=False)
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=UNPUBLISHED,
        sqlite_where=UNPUBLISHED,
    )


def _old_row(topic: str, line: str, created_at: object) -> dict[str, object]:
    key, value = line.split("\t", 1)
    payload = json.loads(value)
    return {
        "event_id": payload["event_id"],
        "topic": topic,
        "key": key,
        "payload": payload,
        "created_at": created_at,
    }
