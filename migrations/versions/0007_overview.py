"""The operator's overview: freshness history, stale -> fresh transitions, dead-letter
counts, and the indexes of the panel's profile list.

``freshness_samples`` is what the gauge timer samples (the overview's charts);
``fresh_transitions`` records how long a row was stale when a result made it fresh
(time-to-fresh percentiles); ``dead_letter_counts`` carries the workers' in-process
dead-letter counts to the database. All three are pruned by the sweep.

The list's keyset orders need ``(updated_at, user_id)``, per model and per source group,
and ``(is_stale, stale_since, user_id)`` (which replaces ``(is_stale, stale_since)``). On
PostgreSQL the indexes are built ``CONCURRENTLY`` so writers are not blocked meanwhile.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLE = "user_profile_highlights"
NEW_INDEXES = {
    "ix_user_profile_highlights_is_stale_stale_since_user_id": [
        "is_stale",
        "stale_since",
        "user_id",
    ],
    "ix_user_profile_highlights_updated_at_user_id": ["updated_at", "user_id"],
    "ix_user_profile_highlights_llm_model_updated_at_user_id": [
        "llm_model",
        "updated_at",
        "user_id",
    ],
    "ix_user_profile_highlights_source_group_updated_at_user_id": [
        "source_group",
        "updated_at",
        "user_id",
    ],
}
OLD_INDEX = ("ix_user_profile_highlights_is_stale_stale_since", ["is_stale", "stale_since"])


def _create_tables() -> None:
    op.create_table(
        "freshness_samples",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("sampled_at", TS, nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in (
                "total",
                "fresh",
                "stale",
                "expired",
                "overridden",
                "missing",
                "pending",
            )
        ),
        sa.Column("oldest_stale_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_freshness_samples")),
    )
    op.create_index(op.f("ix_freshness_samples_sampled_at"), "freshness_samples", ["sampled_at"])
    op.create_table(
        "fresh_transitions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("stale_s", sa.Float(), nullable=False),
        sa.Column("wait_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fresh_transitions")),
    )
    op.create_index(op.f("ix_fresh_transitions_at"), "fresh_transitions", ["at"])
    op.create_table(
        "dead_letter_counts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter_counts")),
    )
    op.create_index(op.f("ix_dead_letter_counts_at"), "dead_letter_counts", ["at"])


def _build(indexes: dict[str, list[str]], drop: tuple[str, list[str]]) -> None:
    """Create ``indexes`` and drop ``drop``; concurrently (outside the transaction) on
    PostgreSQL, so a large table stays writable while they are built."""
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, columns in indexes.items():
                op.create_index(
                    name, TABLE, columns, postgresql_concurrently=True, if_not_exists=True
                )
            op.drop_index(drop[0], table_name=TABLE, postgresql_concurrently=True, if_exists=True)
        return
    for name, columns in indexes.items():
        op.create_index(name, TABLE, columns)
    op.drop_index(drop[0], table_name=TABLE)


def upgrade() -> None:
    _create_tables()
    _build(NEW_INDEXES, OLD_INDEX)


def downgrade() -> None:
    name, columns = OLD_INDEX
    # Put the old index back first: the gauges' oldest-stale query keeps an index meanwhile.
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(name, TABLE, columns, postgresql_concurrently=True, if_not_exists=True)
            for index in NEW_INDEXES:
                op.drop_index(index, table_name=TABLE, postgresql_concurrently=True, if_exists=True)
    else:
        op.create_index(name, TABLE, columns)
        for index in NEW_INDEXES:
            op.drop_index(index, table_name=TABLE)
    for table in ("dead_letter_counts", "fresh_transitions", "freshness_samples"):
        op.drop_table(table)
