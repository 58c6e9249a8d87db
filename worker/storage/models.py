"""SQLAlchemy 2 typed models: the schema Alembic migrates and the service layer uses.
Their column types (aware UTC timestamps on both databases) are ``worker.storage.column_types``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from worker.storage.column_types import AutoId, JsonDoc, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class HighlightRow(Base):
    """One row per user: the auto-generated highlight, its provenance, freshness and override."""

    __tablename__ = "user_profile_highlights"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    bio_text: Mapped[str | None] = mapped_column(Text)
    proof_points_json: Mapped[list[Any] | None] = mapped_column(JsonDoc)
    quotes_json: Mapped[list[Any] | None] = mapped_column(JsonDoc)
    source_group: Mapped[str | None] = mapped_column(String(200))
    snapshot_hash: Mapped[str | None] = mapped_column(String(128))
    llm_model: Mapped[str | None] = mapped_column(String(200))
    generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stale_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    manual_override: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    override_text: Mapped[str | None] = mapped_column(Text)
    override_actor: Mapped[str | None] = mapped_column(String(200))
    override_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    stale_reason: Mapped[str | None] = mapped_column(String(32))
    stale_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    regen_request_id: Mapped[str | None] = mapped_column(String(64))
    regen_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    regen_generation: Mapped[int | None] = mapped_column(BigInteger)
    regen_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # A queued request (not yet published: worker.services.scheduler), NULL when none.
    regen_queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    regen_first_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    regen_last_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    regen_priority: Mapped[int | None] = mapped_column(Integer)
    regen_queued_reason: Mapped[str | None] = mapped_column(String(32))
    regen_queued_trigger: Mapped[str | None] = mapped_column(Text)
    regen_unseen: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The input snapshot (``worker.domain.snapshot``): the live input set's version and
    # fingerprint, and those the stored highlight covers (NULL: unknown, or to be replaced
    # whatever the inputs); when a regeneration was last skipped as buying nothing.
    input_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    input_fingerprint: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    covered_version: Mapped[int | None] = mapped_column(BigInteger)
    covered_fingerprint: Mapped[int | None] = mapped_column(BigInteger)
    regen_skipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The pending (or last) request's lane and reason (``worker.domain.cost``): the spend of
    # the result that answers it is booked to them.
    regen_request_lane: Mapped[str | None] = mapped_column(String(16))
    regen_request_reason: Mapped[str | None] = mapped_column(String(32))
    # What the stored highlight's generation used, as its result reported (NULL: not reported).
    usage_input_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_output_tokens: Mapped[int | None] = mapped_column(BigInteger)
    usage_cost_usd: Mapped[float | None] = mapped_column(Float)
    # The LLM tokens the pending request was charged against its lane's token budget
    # (``worker.services.lane_budget``); its result settles the difference to actual usage.
    regen_token_estimate: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_user_profile_highlights_stale_after", "stale_after"),
        Index("ix_user_profile_highlights_regen_requested_at", "regen_requested_at"),
        # Keyset orders of the panel's profile list (``worker.services.profile_list``): by
        # staleness (also the oldest-stale gauge) and by change, whole or per model / group.
        Index(
            "ix_user_profile_highlights_is_stale_stale_since_user_id",
            "is_stale",
            "stale_since",
            "user_id",
        ),
        Index("ix_user_profile_highlights_updated_at_user_id", "updated_at", "user_id"),
        Index(
            "ix_user_profile_highlights_llm_model_updated_at_user_id",
            "llm_model",
            "updated_at",
            "user_id",
        ),
        Index(
            "ix_user_profile_highlights_source_group_updated_at_user_id",
            "source_group",
            "updated_at",
            "user_id",
        ),
    )


# The scheduler's order (``scheduler.QUEUE_ORDER``), so a step reads due rows in order and
# stops at its limit instead of sorting the whole queue every tick.
Index(
    "ix_user_profile_highlights_regen_queue_order",
    HighlightRow.regen_priority,
    HighlightRow.regen_unseen.desc(),
    HighlightRow.regen_first_change_at,
    HighlightRow.user_id,
    postgresql_where=text("regen_queued_at IS NOT NULL"),
    sqlite_where=text("regen_queued_at IS NOT NULL"),
)

# The queued rows a step may skip as unchanged (``scheduler.skippable``), in its order:
# usually none, so the skip query reads nothing instead of the whole queue every tick. A
# comment moves ``input_fingerprint`` off the covered one, so its update adds no entry here.
SKIPPABLE = (
    "regen_queued_at IS NOT NULL AND covered_fingerprint = input_fingerprint"
    " AND generated_at IS NOT NULL"
)
Index(
    "ix_user_profile_highlights_regen_skippable",
    HighlightRow.user_id,
    postgresql_where=text(SKIPPABLE),
    sqlite_where=text(SKIPPABLE),
)


@dataclass(slots=True)
class RowState:
    """The freshness columns of a ``HighlightRow`` as plain values, without ORM tracking:
    what the set-based comment path (``worker.services.comments``) loads, changes and writes back.
    The staleness rules accept either (``worker.services.outbox.Requestable``)."""

    user_id: int
    snapshot_hash: str | None
    generated_at: datetime | None
    manual_override: bool
    is_stale: bool
    stale_since: datetime | None
    stale_reason: str | None
    generation: int
    regen_request_id: str | None
    regen_requested_at: datetime | None
    regen_generation: int | None
    regen_attempts: int
    updated_at: datetime
    regen_queued_at: datetime | None = None
    regen_first_change_at: datetime | None = None
    regen_last_change_at: datetime | None = None
    regen_priority: int | None = None
    regen_queued_reason: str | None = None
    regen_queued_trigger: str | None = None
    regen_unseen: int = 0
    input_version: int = 0
    input_fingerprint: int = 0
    covered_version: int | None = None
    covered_fingerprint: int | None = None
    regen_request_lane: str | None = None
    regen_request_reason: str | None = None
    regen_token_estimate: int | None = None


class OutboxRow(Base):
    """Messages written in the same transaction as the state change they announce.

    One row holds every message one transaction queued for a topic, one per line as
    ``key<TAB>json`` (``worker.services.outbox`` writes and reads them): a comment batch or a sweep
    chunk costs one row, not one per request. The relay deletes a row once the broker has
    acked its messages, so the table holds only what is still to publish and never grows.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    messages: Mapped[str] = mapped_column(Text)
    message_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RegenBudgetRow(Base):
    """The regeneration budget shared by every worker: per lane's budget
    (``worker.services.lane_budget``: ``id`` 1 the interactive lane, or both lanes; 2 the
    batch lane when it has a budget of its own) a bucket of request credits (``tokens``)
    and one of LLM tokens (``llm_tokens``), updated under the row's lock in the
    transaction that publishes queued requests. The pause and the spend cap are row 1's."""

    __tablename__ = "regen_budget"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # An operator's pause (``wb signal-profile pause-regeneration``): nothing is released
    # and nothing earned before then, by any worker.
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The daily spend cap was reached: until this time (the next 00:00 UTC) only privacy
    # requests are published (``worker.services.scheduler.spend_capped``).
    capped_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The LLM-token bucket (``WB_REGEN_TOKENS_PER_MIN``); may be negative (a debt: the
    # estimates charged ran ahead of the refill). NULL: never used (full).
    llm_tokens: Mapped[float | None] = mapped_column(Float)
    llm_tokens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TokenSettlementRow(Base):
    """A result's actual LLM tokens against the estimate its request was charged
    (``amount`` = estimate - actual: positive gives tokens back). Inserted in the result's
    transaction (insert-only: results never wait for the budget row's lock); the next
    scheduler step of the lane's budget adds them up and deletes them under that lock."""

    __tablename__ = "regen_token_settlements"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    lane: Mapped[str] = mapped_column(String(16))
    amount: Mapped[float] = mapped_column(Float)


class CommentInputRow(Base):
    """A user's live input set, one comment a row (``worker.services.snapshots``): the
    version it holds (``worker.domain.snapshot``), or a tombstone. Written only under the
    user's row lock, in the transaction that moves the row's ``input_version``."""

    __tablename__ = "comment_inputs"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    comment_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version_event: Mapped[str | None] = mapped_column(String(200))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class DeletedCommentRow(Base):
    """Comments deleted about a user: quotes attributed to them are never served."""

    __tablename__ = "deleted_comments"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    comment_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProcessedEventRow(Base):
    """Event ids already applied, per input stream: makes every handler safe to run twice.
    On PostgreSQL its pages are half filled (migration 0014): a batch stores the outcomes
    of the rows its claim inserted as HOT updates (``worker.storage.dedup``)."""

    __tablename__ = "processed_events"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class SignalRequestRow(Base):
    """The Signal request -> user mapping, learnt from ``signal.requests``."""

    __tablename__ = "signal_requests"

    request_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ParkedCommentRow(Base):
    """Comments whose request is not mapped yet; applied when the mapping arrives, or
    dead-lettered past ``WB_PARKED_RETENTION`` (``services.parking``): where the message
    came from is kept for that dead letter (its key, so that a replay lands on the
    partition of its key's other events). NULL in rows parked before revision 0010."""

    __tablename__ = "parked_comments"

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(200), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    parked_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source_topic: Mapped[str | None] = mapped_column(String(255))
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    source_key: Mapped[bytes | None] = mapped_column(LargeBinary)


class SignalActivityRow(Base):
    """What we recorded of a user's Signal activity: the fallback a UI shows, and scan input."""

    __tablename__ = "signal_activity"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    comment_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_comment_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_comment_id: Mapped[str | None] = mapped_column(String(200))
    last_comment_type: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScanCheckpointRow(Base):
    """Progress of a resumable freshness scan: the last user id done and running totals."""

    __tablename__ = "scan_checkpoints"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_user_id: Mapped[int | None] = mapped_column(BigInteger)
    stats: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """Append-only record of every change a person made: who, when, what, and the diff."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    user_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    diff: Mapped[dict[str, Any]] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_audit_log_user_id_id", "user_id", "id"),)


class AdminTokenRow(Base):
    """An operator's API token: only its SHA-256 is stored; revocation takes effect at once."""

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AdminSessionRow(Base):
    """A logged-in panel session; the cookie holds its random id, this row its SHA-256.
    Deleting the row (logout) ends the session wherever its cookie was copied."""

    __tablename__ = "admin_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(AutoId, ForeignKey("admin_tokens.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class FreshnessSampleRow(Base):
    """The store's freshness figures, sampled by the gauge timer at most every
    ``WB_HISTORY_INTERVAL``: what the overview's 24-hour charts draw. Pruned by the sweep
    after ``WB_HISTORY_RETENTION``."""

    __tablename__ = "freshness_samples"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    total: Mapped[int] = mapped_column(BigInteger)
    fresh: Mapped[int] = mapped_column(BigInteger)
    stale: Mapped[int] = mapped_column(BigInteger)
    expired: Mapped[int] = mapped_column(BigInteger)
    overridden: Mapped[int] = mapped_column(BigInteger)
    missing: Mapped[int] = mapped_column(BigInteger)
    pending: Mapped[int] = mapped_column(BigInteger)
    oldest_stale_s: Mapped[float | None] = mapped_column(Float)


class FreshTransitionRow(Base):
    """A result made a stale row fresh: how long it had been stale (``stale_s``, from
    ``stale_since``) and how long its pending request waited (``wait_s``, from
    ``regen_requested_at``). Written in the result's transaction; the overview's
    time-to-fresh percentiles. Pruned by the sweep after ``WB_HISTORY_RETENTION``."""

    __tablename__ = "fresh_transitions"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    stale_s: Mapped[float] = mapped_column(Float)
    wait_s: Mapped[float | None] = mapped_column(Float)


class RegenSpendRow(Base):
    """Results and the usage they reported, per minute (the database's clock), lane and
    reason of the request answered (``worker.domain.cost``): the overview's and the
    report's spend, and the daily cap's. Incremented in the results' own transaction, so an
    event is counted once however often it is delivered (its claim is in the same
    transaction); a result already stored (the same generation) is not counted again.
    Pruned by the sweep after ``WB_HISTORY_RETENTION``."""

    __tablename__ = "regen_spend"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    lane: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    results: Mapped[int] = mapped_column(BigInteger, default=0)
    token_reports: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_reports: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class DeadLetterCountRow(Base):
    """Dead letters a worker sent since its previous gauge refresh, by stream and reason
    (each worker writes its own counts: sums over workers are right). Pruned by the sweep
    after ``WB_HISTORY_RETENTION``."""

    __tablename__ = "dead_letter_counts"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stream: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer)
