"""The input states of a batch's comments, read on PostgreSQL by one probe of
``comment_inputs``' primary key per comment, whatever the planner knows of the table.

A join of the batch's keys to the table is planned from its statistics, and a prepared
statement keeps the plan it made until the next analyze. With the statistics of a table
never analyzed (a new database, after a truncate) the plan read the whole table once a
batch (10 ms at 50,000 rows); with those of a table analyzed while empty, a probe per key
planned as a scan of the table per key (169 ms a batch at 9,500 rows). This function
plans its one statement on each call with sequential and bitmap scans off, so that the
per-key lateral subquery (OFFSET 0: never flattened into a join) is an index probe:
0.6-0.9 ms for 500 keys, the call included (docs/performance.md, issue 28). STABLE, so
its statement reads with the caller's snapshot. SQLite reads the states with the ORM.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

CREATE = """
CREATE FUNCTION comment_input_states(users bigint[], comments text[])
RETURNS TABLE (user_id bigint, comment_id text, version_at timestamptz,
               version_event text, deleted boolean)
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
SELECT k.user_id, CAST(c.comment_id AS text), c.version_at,
       CAST(c.version_event AS text), c.deleted
FROM unnest(users, comments) AS k(user_id, comment_id)
CROSS JOIN LATERAL (
    SELECT c.comment_id, c.version_at, c.version_event, c.deleted FROM comment_inputs c
    WHERE c.user_id = k.user_id AND c.comment_id = k.comment_id OFFSET 0
) AS c
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION comment_input_states(bigint[], text[])")
