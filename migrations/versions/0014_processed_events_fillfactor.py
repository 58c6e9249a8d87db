"""``processed_events`` pages half filled on PostgreSQL, so that storing an outcome is a
HOT update.

A batch claims its events (``worker.storage.dedup``: rows with the outcome ``claimed``)
and stores their outcomes at the end of the same transaction. Into full pages that update
could not put the new row version beside the old one: each was a new tuple elsewhere
plus an entry in both indexes (300-364 B of WAL a comment; the primary key held two
entries for every event). Pages filled to half leave each row room for its second version
on its own page: 138 B a comment, and 1.3-1.4 ms instead of 3.5 for a batch of 500; the
claim writes 47 B a comment more, on twice the pages (docs/performance.md, issue 28).
Pages written before keep their fill; the table's new pages follow. Instant (no rewrite),
and workers of the previous revision run on it unchanged. SQLite has no such thing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE processed_events SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE processed_events RESET (fillfactor)")
