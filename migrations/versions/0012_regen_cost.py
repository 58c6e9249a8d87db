"""What regeneration costs: each request's lane and reason on its row, each highlight's
reported usage, the spend per minute, lane and reason (``worker.domain.cost``), the
budget's daily spend cap (``regen_budget.capped_until``), and the LLM-token budget (a
bucket per budget row, each request's estimate, the results' settlements).

Existing rows have no usage reported and no lane (a result answering a request made before
this revision is booked to the lane of its stale reason's priority); nothing to backfill.
Stop every worker before upgrading to it: a relay of an older version would publish the
batch lane's rows to a topic named after their stream (``regen-requests-batch``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

H = "user_profile_highlights"


def upgrade() -> None:
    with op.batch_alter_table(H) as batch:
        batch.add_column(sa.Column("regen_request_lane", sa.String(16), nullable=True))
        batch.add_column(sa.Column("regen_request_reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("usage_input_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("usage_output_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("usage_cost_usd", sa.Float(), nullable=True))
        batch.add_column(sa.Column("regen_token_estimate", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("regen_budget") as batch:
        batch.add_column(sa.Column("capped_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("llm_tokens", sa.Float(), nullable=True))
        batch.add_column(sa.Column("llm_tokens_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "regen_token_settlements",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regen_token_settlements")),
    )
    op.create_table(
        "regen_spend",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("results", sa.BigInteger(), nullable=False),
        sa.Column("token_reports", sa.BigInteger(), nullable=False),
        sa.Column("cost_reports", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "lane", "reason", name=op.f("pk_regen_spend")),
    )


def downgrade() -> None:
    op.drop_table("regen_spend")
    op.drop_table("regen_token_settlements")
    with op.batch_alter_table("regen_budget") as batch:
        for column in ("llm_tokens_at", "llm_tokens", "capped_until"):
            batch.drop_column(column)
    with op.batch_alter_table(H) as batch:
        for name in (
            "regen_token_estimate",
            "usage_cost_usd",
            "usage_output_tokens",
            "usage_input_tokens",
            "regen_request_reason",
            "regen_request_lane",
        ):
            batch.drop_column(name)
