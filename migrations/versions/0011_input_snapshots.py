"""Input snapshots: each row's input version and fingerprint and what its highlight
covers, and the live input set they come from (``comment_inputs``).

Existing rows start at version 0 with the fingerprint of their recorded activity
(``worker.domain.snapshot.baseline``: the comments before this revision are known only by
their summary); a fresh row with a highlight covers it, any other covers nothing known
(its regeneration is never skipped).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from worker.domain.snapshot import baseline

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

H = "user_profile_highlights"
COLUMNS = ("input_version", "input_fingerprint", "covered_version", "covered_fingerprint")


def upgrade() -> None:
    with op.batch_alter_table(H) as batch:
        for name in COLUMNS[:2]:
            batch.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0"))
            )
        for name in COLUMNS[2:]:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("regen_skipped_at", sa.DateTime(timezone=True)))
    op.create_table(
        "comment_inputs",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("comment_id", sa.String(200), nullable=False),
        sa.Column("version_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version_event", sa.String(200), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "comment_id", name=op.f("pk_comment_inputs")),
    )
    _baselines()


def _baselines() -> None:
    """Each row's fingerprint from its recorded activity, a thousand rows a statement."""
    bind = op.get_bind()
    found = bind.execute(
        sa.text(
            "SELECT a.user_id, a.comment_count, a.last_comment_id, a.last_comment_at "
            f"FROM signal_activity a JOIN {H} h ON h.user_id = a.user_id"
        )
    ).all()
    values = [
        {"u": user_id, "f": baseline(count, last_id, _aware(last_at))}
        for user_id, count, last_id, last_at in found
    ]
    update = sa.text(f"UPDATE {H} SET input_fingerprint = :f WHERE user_id = :u")
    for start in range(0, len(values), 1000):
        bind.execute(update, values[start : start + 1000])
    bind.execute(
        sa.text(
            f"UPDATE {H} SET covered_version = 0, covered_fingerprint = input_fingerprint "
            "WHERE NOT is_stale AND generated_at IS NOT NULL"
        )
    )


def _aware(value: datetime | str | None) -> datetime | None:
    """SQLite hands back naive UTC text or datetimes: the baseline hashes the aware form."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def downgrade() -> None:
    op.drop_table("comment_inputs")
    with op.batch_alter_table(H) as batch:
        for name in (*COLUMNS, "regen_skipped_at"):
            batch.drop_column(name)
