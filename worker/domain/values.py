"""Value objects shared by the service layer, the events and the views.

Enums here are the closed sets that metrics labels and topic contracts draw from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.domain.cost import Usage
from worker.domain.errors import InvalidInput
from worker.domain.ids import MAX_USER_ID

MAX_BIO_CHARS = 20_000
MAX_OVERRIDE_CHARS = 5_000
MAX_LIST_ITEMS = 100
MAX_ITEM_CHARS = 5_000
# Producers' clocks drift; a timestamp further ahead than this is a bug, not skew.
MAX_FUTURE_SKEW = timedelta(days=1)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


# Why a row is stale (``stale_reason``; what an operator may name to ``mark_stale``).
class StaleReason(StrEnum):
    NEW_COMMENT = "new_comment"
    COMMENT_EDITED = "comment_edited"
    COMMENT_DELETED = "comment_deleted"
    EXPIRED = "expired"
    MISSING = "missing"
    MANUAL = "manual"


# Why a regeneration is requested (the request's ``reason`` on the wire): a stale reason,
# or ``RETRY`` for a pending request asked again, which makes no row stale. Two enums so
# that a retry can never become a ``stale_reason``; tests/domain/test_values.py ties them.
# (No docstring: it would enter the wire schema, schemas/regen-request.json.)
class RegenReason(StrEnum):
    NEW_COMMENT = "new_comment"
    COMMENT_EDITED = "comment_edited"
    COMMENT_DELETED = "comment_deleted"
    EXPIRED = "expired"
    MISSING = "missing"
    MANUAL = "manual"
    RETRY = "retry"


class StaleOutcome(StrEnum):
    """What a stale mark led to: a new request, a coalesced one, or none (override locked)."""

    REQUESTED = "requested"
    COALESCED = "coalesced"
    SETTLED = "settled"  # absorbed by a request still queued (settling): pushed back
    OVERRIDE_LOCKED = "override_locked"


class UpsertOutcome(StrEnum):
    APPLIED = "applied"
    APPLIED_STILL_STALE = "applied_still_stale"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    CONFLICT = "conflict"


def utcnow() -> datetime:
    return datetime.now(UTC)


def valid_text(value: str) -> bool:
    """UTF-8-encodable and free of NUL: what both databases store alike. A lone surrogate
    (what Python makes of invalid UTF-8 in argv, a header or a path) fails later in the
    driver or the JSON encoder, NUL in PostgreSQL alone; every boundary refuses both."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


TIMESTAMP_RANGE = "a timestamp must lie between years 1 and 9999 in UTC"


def in_utc(value: datetime) -> datetime | None:
    """The same instant in UTC, or None when it has none Python can hold (year 1..9999).

    Both databases are handed timestamps in UTC (``UTCDateTime`` converts, and asyncpg
    would too), so ``9999-12-31T23:59:59-14:00`` parses but overflows on the way in: every
    timestamp a client names goes through here first. A naive value is returned as is
    (``check_aware`` names it)."""
    if value.utcoffset() is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def check_aware(name: str, value: datetime | None, now: datetime | None = None) -> None:
    """Refuse naive, pre-1970 and far-future timestamps with a message naming the field."""
    if value is None:
        return
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    if value < EARLIEST:
        raise InvalidInput(f"{name} {value.isoformat()} is before 1970")
    if now is not None and value > now + MAX_FUTURE_SKEW:
        raise InvalidInput(f"{name} {value.isoformat()} is more than a day in the future")


def refuse_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold NUL characters: refuse them at the door, so
    both databases accept exactly the same input."""
    texts = value if isinstance(value, list) else [value]
    if any(isinstance(t, str) and "\x00" in t for t in texts):
        raise ValueError("text must not contain NUL characters")
    return value


class AttributedQuote(BaseModel):
    """A quote the generator attributes to a comment: withheld once that comment is deleted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_ITEM_CHARS)
    comment_id: str = Field(min_length=1, max_length=200)

    @field_validator("text", "comment_id")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)


# An item of ``quotes``: a plain string (unattributed), or attributed to a comment.
Quote = str | AttributedQuote


def quote_json(quote: Quote) -> Any:
    """How a quote is stored and served: the string, or ``{"text", "comment_id"}``."""
    return quote if isinstance(quote, str) else quote.model_dump()


def quote_comment_id(item: Any) -> str | None:
    """The comment a stored quote is attributed to, if any."""
    if isinstance(item, dict) and item.get("comment_id") is not None:
        return str(item["comment_id"])
    return None


def withhold(quotes: list[Any], deleted: frozenset[str]) -> list[Any]:
    """The stored quotes minus those attributed to a deleted comment (privacy: applies at
    once, before any regeneration, and to a stale highlight still displayed)."""
    if not deleted:
        return list(quotes)
    return [q for q in quotes if quote_comment_id(q) not in deleted]


class GeneratedHighlight(BaseModel):
    """The content a generator produced for one user (what ``upsert_auto`` stores)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: int = Field(gt=0, le=MAX_USER_ID)
    bio_text: str = Field(min_length=1, max_length=MAX_BIO_CHARS)
    proof_points: list[str] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    quotes: list[Quote] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    source_group: str = Field(min_length=1, max_length=200)
    llm_model: str = Field(min_length=1, max_length=200)
    generated_at: datetime
    stale_after: datetime | None = None

    @field_validator("bio_text", "proof_points", "quotes", "source_group", "llm_model")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)

    @field_validator("proof_points", "quotes")
    @classmethod
    def _item_size(cls, items: list[Any]) -> list[Any]:
        for item in items:
            if isinstance(item, str) and len(item) > MAX_ITEM_CHARS:
                raise ValueError(f"an item is longer than {MAX_ITEM_CHARS} characters")
        return items


class UpsertMeta(BaseModel):
    """What the generator says about the result: which request and snapshot it answers."""

    model_config = ConfigDict(frozen=True)

    base_snapshot_hash: str | None = None
    generation: int | None = Field(default=None, ge=0)
    regen_request_id: str | None = None
    input_version: int | None = Field(default=None, ge=0)  # the request's, echoed
    usage: Usage | None = None  # what the generation used (``worker.domain.cost``)


class Highlight(BaseModel):
    """Read model of one ``user_profile_highlights`` row."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    user_id: int
    bio_text: str | None
    proof_points: list[Any]
    quotes: list[Any]
    source_group: str | None
    snapshot_hash: str | None
    llm_model: str | None
    generated_at: datetime | None
    stale_after: datetime | None
    manual_override: bool
    override_text: str | None
    override_actor: str | None
    override_set_at: datetime | None
    is_stale: bool
    stale_reason: str | None
    stale_since: datetime | None
    generation: int
    regen_request_id: str | None
    regen_requested_at: datetime | None
    regen_generation: int | None
    regen_attempts: int
    input_version: int = 0
    input_fingerprint: int = 0
    covered_version: int | None = None
    covered_fingerprint: int | None = None
    regen_skipped_at: datetime | None = None
    regen_request_lane: str | None = None
    regen_request_reason: str | None = None
    usage_input_tokens: int | None = None
    usage_output_tokens: int | None = None
    usage_cost_usd: float | None = None
    regen_token_estimate: int | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def has_content(self) -> bool:
        """False for a placeholder row that only tracks a first ("missing") generation."""
        return self.generated_at is not None

    @classmethod
    def from_row(cls, row: object) -> Highlight:
        """From a stored row (``worker.storage.models.HighlightRow``), read by attribute so
        that the domain does not depend on the ORM."""
        data = {name: getattr(row, name) for name in cls.model_fields if hasattr(row, name)}
        data["proof_points"] = list(getattr(row, "proof_points_json", None) or [])
        data["quotes"] = list(getattr(row, "quotes_json", None) or [])
        return cls.model_validate(data)
