"""Initial schema: highlights, outbox, dedup, Signal map/activity, parked comments, scans, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "user_profile_highlights",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("bio_text", sa.Text()),
        sa.Column("proof_points_json", JSON_DOC),
        sa.Column("quotes_json", JSON_DOC),
        sa.Column("source_group", sa.String(200)),
        sa.Column("snapshot_hash", sa.String(128)),
        sa.Column("llm_model", sa.String(200)),
        sa.Column("generated_at", TS),
        sa.Column("stale_after", TS),
        sa.Column("manual_override", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("override_text", sa.Text()),
        sa.Column("override_actor", sa.String(200)),
        sa.Column("override_set_at", TS),
        sa.Column("is_stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("stale_reason", sa.String(32)),
        sa.Column("stale_since", TS),
        sa.Column("generation", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("regen_request_id", sa.String(64)),
        sa.Column("regen_requested_at", TS),
        sa.Column("regen_generation", sa.BigInteger()),
        sa.Column("regen_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_profile_highlights")),
    )
    op.create_index(
        "ix_user_profile_highlights_stale_after", "user_profile_highlights", ["stale_after"]
    )
    op.create_index(
        "ix_user_profile_highlights_regen_requested_at",
        "user_profile_highlights",
        ["regen_requested_at"],
    )
    op.create_index(
        "ix_user_profile_highlights_is_stale_stale_since",
        "user_profile_highlights",
        ["is_stale", "stale_since"],
    )

    op.create_table(
        "outbox",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("published_at", TS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])

    op.create_table(
        "processed_events",
        sa.Column("stream", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("processed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("stream", "event_id", name=op.f("pk_processed_events")),
    )
    op.create_index("ix_processed_events_processed_at", "processed_events", ["processed_at"])

    op.create_table(
        "signal_requests",
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_signal_requests")),
    )
    op.create_index("ix_signal_requests_user_id", "signal_requests", ["user_id"])

    op.create_table(
        "parked_comments",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.Column("parked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_parked_comments")),
    )
    op.create_index("ix_parked_comments_request_id", "parked_comments", ["request_id"])

    op.create_table(
        "signal_activity",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("comment_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_comment_at", TS),
        sa.Column("last_comment_id", sa.String(200)),
        sa.Column("last_comment_type", sa.String(32)),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_signal_activity")),
    )

    op.create_table(
        "scan_checkpoints",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("last_user_id", sa.BigInteger()),
        sa.Column("stats", JSON_DOC, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scan_checkpoints")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("diff", JSON_DOC, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_user_id_id", "audit_log", ["user_id", "id"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "scan_checkpoints",
        "signal_activity",
        "parked_comments",
        "signal_requests",
        "processed_events",
        "outbox",
        "user_profile_highlights",
    ):
        op.drop_table(table)
