"""Parked comments keep where they came from (topic, partition, offset, key) for the dead
letter they become past ``WB_PARKED_RETENTION``, and are indexed by parking time (the
expiry takes the oldest first; the gauges read the oldest).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

P = "parked_comments"
INDEX = "ix_parked_comments_parked_at"
SOURCE = ("source_topic", "source_partition", "source_offset", "source_key")


def upgrade() -> None:
    with op.batch_alter_table(P) as batch:
        batch.add_column(sa.Column("source_topic", sa.String(255), nullable=True))
        batch.add_column(sa.Column("source_partition", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("source_offset", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("source_key", sa.LargeBinary(), nullable=True))
    op.create_index(INDEX, P, ["parked_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name=P)
    with op.batch_alter_table(P) as batch:
        for column in SOURCE:
            batch.drop_column(column)
