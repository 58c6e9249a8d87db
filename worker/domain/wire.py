"""Topic contracts: the wire scalars (ids, timestamps) and a pydantic model per message.

The models are the contract: ``python -m worker.cli.schemas`` turns them into ``schemas/``,
and ``worker.domain.decoder`` validates every input message against them. Scalars are
built as pydantic-core schemas, since they run on every event of every topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from worker.domain.cost import MAX_COST_USD, MAX_TOKENS, Lane, Usage
from worker.domain.ids import MAX_BIGINT, MAX_USER_ID
from worker.domain.values import (
    MAX_BIO_CHARS,
    MAX_ITEM_CHARS,
    MAX_LIST_ITEMS,
    TIMESTAMP_RANGE,
    RegenReason,
    in_utc,
    refuse_nul,
)


class InputStream(StrEnum):
    """Logical input streams; topic names are configurable, these names are not."""

    COMMENTS = "comments"
    REQUESTS = "requests"
    GENERATED = "generated"


ID_PATTERN = r"^[\x21-\x7e]+$"
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"


class _IdSchema:
    """Ids may be typed as strings or as non-negative integers; both become strings.

    Built as one core schema (a union of a constrained string and an integer turned into
    a string) so that validation runs inside pydantic-core: ids are on every event, and
    Python-level validators cost more than the rest of decoding together."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        text = core_schema.str_schema(min_length=1, max_length=200, pattern=ID_PATTERN, strict=True)
        number = core_schema.no_info_after_validator_function(
            str, core_schema.int_schema(ge=0, le=MAX_BIGINT, strict=True)
        )
        return core_schema.union_schema(
            [text, number],
            mode="left_to_right",
            custom_error_type="id",
            custom_error_message=(
                "an id must be a string of 1-200 printable ASCII characters without spaces, "
                "or an integer between 0 and 2^63-1"
            ),
        )


# RFC 3339's date-time (pydantic alone also takes epoch seconds, dates and minutes without
# seconds); the zone is optional here only so that a naive value is refused by
# ``check_aware`` with a message that says so. Rust's regex engine: linear time.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)


def _in_utc(value: datetime) -> datetime:
    """Every accepted timestamp leaves the decoder in UTC, as ``datetime.UTC`` itself:
    Python holds offsets up to ±23:59, PostgreSQL only up to ±15:59 (it refuses the rest,
    inside a whole batch's array literal). The same instant, so no rule sees a difference."""
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() is None:
        return value  # naive values are refused by ``check_aware``, which names them
    converted = in_utc(value)
    if converted is None:
        raise PydanticCustomError("timestamp_range", TIMESTAMP_RANGE)
    return converted


def _parsed_in_utc(value: str, parse: core_schema.ValidatorFunctionWrapHandler) -> datetime:
    """The text the pattern let through, parsed by ``datetime.fromisoformat`` when it can
    (what nearly every producer sends), else by pydantic (lower-case ``t``/``z``; and every
    refusal, so that its message is pydantic's). Why not pydantic alone: its datetimes carry
    its own ``TzInfo``, whose offset Python fetches through a call, so every comparison,
    subtraction and hash of such a value downstream (clock bounds, the rules, a batch's
    instants) cost 0.2-0.9 us more than with ``datetime.UTC``: a tenth of a comment's CPU."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = parse(value)
    return _in_utc(parsed)


class _TimestampSchema:
    """Timestamps are RFC 3339 strings on the wire (no epoch numbers: they hide the zone);
    a string first, then a datetime, both checked before any rule sees them, then the same
    instant in UTC."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        text = core_schema.custom_error_schema(
            core_schema.str_schema(strict=True, pattern=RFC3339_PATTERN),
            custom_error_type="timestamp_type",
            custom_error_message=(
                "a timestamp must be an RFC 3339 string such as 2026-01-01T00:00:00Z"
            ),
        )
        return core_schema.chain_schema(
            [text, core_schema.no_info_wrap_validator_function(_parsed_in_utc, handler(source))]
        )


Id = Annotated[
    str,
    _IdSchema,
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "string", "minLength": 1, "maxLength": 200, "pattern": ID_PATTERN},
                {"type": "integer", "minimum": 0, "maximum": MAX_BIGINT},
            ]
        }
    ),
]
Timestamp = Annotated[
    datetime,
    _TimestampSchema,
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
UserId = Annotated[StrictInt, Field(gt=0, le=MAX_USER_ID)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_ITEM_CHARS)]


class WireQuote(BaseModel):
    """A quote attributed to a comment (``quotes`` items may also be plain strings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Text
    comment_id: Id

    @field_validator("text")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)


Tokens = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS)]


class WireUsage(BaseModel):
    """What one generation used, as its generator reports it (``worker.domain.cost``).
    Numbers only (a string, a boolean, NaN or an infinity is refused), none negative,
    tokens up to 10,000,000 and cost up to 1,000 US dollars; every field optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: Tokens | None = None
    output_tokens: Tokens | None = None
    cost_usd: (
        Annotated[float, Field(ge=0, le=MAX_COST_USD, strict=True, allow_inf_nan=False)] | None
    ) = None

    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens, self.cost_usd)


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id

    def timestamps(self) -> dict[str, datetime | None]:
        return {}


class CommentEvent(_Event):
    """``signal.comments``: a comment about ``user_id`` was created, edited or deleted."""

    type: Literal["comment.created", "comment.edited", "comment.deleted"]
    comment_id: Id
    request_id: Id
    user_id: UserId | None = None
    occurred_at: Timestamp

    def timestamps(self) -> dict[str, datetime | None]:
        return {"occurred_at": self.occurred_at}


class Comment(Protocol):
    """What the comment rules read of a comment (``services.comments``): a decoded
    ``CommentEvent``, or a ``ParkedComment`` released when its mapping arrives."""

    @property
    def event_id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def comment_id(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...


class ParkedComment(NamedTuple):
    """A parked comment released by its mapping, read back from the payload stored when it
    was parked, where it had been validated as a ``CommentEvent``: trusted, a plain tuple.
    Building the model again per released comment (validating, or even ``model_construct``:
    5-10 us under load) cost more than the rest of its rules."""

    event_id: str
    type: str
    comment_id: str
    occurred_at: datetime


class RequestEvent(_Event):
    """``signal.requests``: Signal request ``request_id`` is about ``user_id``."""

    request_id: Id
    user_id: UserId
    occurred_at: Timestamp

    def timestamps(self) -> dict[str, datetime | None]:
        return {"occurred_at": self.occurred_at}


class GeneratedEvent(_Event):
    """``profile.highlights.generated``: a generator's result for one user."""

    user_id: UserId
    bio_text: Annotated[str, Field(min_length=1, max_length=MAX_BIO_CHARS)]
    proof_points: Annotated[list[Text], Field(max_length=MAX_LIST_ITEMS)]
    quotes: Annotated[list[Text | WireQuote], Field(max_length=MAX_LIST_ITEMS)]
    source_group: Annotated[str, Field(min_length=1, max_length=200)]
    snapshot_hash: Annotated[str, Field(min_length=1, max_length=128)]
    llm_model: Annotated[str, Field(min_length=1, max_length=200)]
    generated_at: Timestamp
    stale_after: Timestamp | None = None
    regen_request_id: Id | None = None
    generation: Annotated[StrictInt, Field(ge=0, le=MAX_BIGINT)] | None = None
    base_snapshot_hash: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # The request's ``input_version``, echoed: the result covers the input changes up to
    # it (``worker.domain.snapshot``). Without it the timestamp rule decides.
    input_version: Annotated[StrictInt, Field(ge=0, le=MAX_BIGINT)] | None = None
    # What the generation used (tokens, dollars): stored with the row, summed as spend.
    usage: WireUsage | None = None

    def timestamps(self) -> dict[str, datetime | None]:
        return {"generated_at": self.generated_at, "stale_after": self.stale_after}

    @field_validator(
        "bio_text",
        "proof_points",
        "quotes",
        "source_group",
        "snapshot_hash",
        "llm_model",
        "base_snapshot_hash",
    )
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)

    @field_validator("stale_after")
    @classmethod
    def _after_generated(cls, value: datetime | None, info: Any) -> datetime | None:
        generated = info.data.get("generated_at")
        if value is None or generated is None or None in (value.tzinfo, generated.tzinfo):
            return value  # naive: refused by ``check_aware`` with a message that says so
        if value <= generated:
            raise ValueError("stale_after must be later than generated_at")
        return value


class RegenRequestEvent(BaseModel):
    """``profile.highlights.regen-requests`` (out): please generate a highlight for a user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    user_id: UserId
    reason: RegenReason
    generation: Annotated[StrictInt, Field(ge=0)]
    snapshot_hash: str | None
    requested_at: Timestamp
    trigger: str | None = None
    # 0 most urgent: deleted comment (privacy), missing, new/edited comments, operator,
    # expired, reseed (``worker.domain.scheduling.Priority``).
    priority: Annotated[StrictInt, Field(ge=0, le=9)] = 3
    # The input snapshot the request is for (``worker.domain.snapshot``): a generator
    # echoes ``input_version`` in its result; the fingerprint (16 hex digits) names the
    # live input set, the same for the same set whatever order its events came in.
    input_version: Annotated[StrictInt, Field(ge=0)]
    input_fingerprint: Annotated[str, Field(pattern=FINGERPRINT_PATTERN)]
    # ``interactive`` (someone is waiting) or ``batch`` (expiry, reseed, bulk: may go to a
    # provider's cheaper batch tier), which must be answered by ``respond_by``
    # (``worker.domain.cost``).
    lane: Lane
    respond_by: Timestamp | None = None


def regen_request_payload(
    request_id: str,
    user_id: int,
    reason: RegenReason,
    generation: int,
    snapshot_hash: str | None,
    now: datetime,
    trigger: str | None,
    priority: int,
    inputs: tuple[int, str],
    lane: tuple[Lane, datetime | None],
) -> dict[str, Any]:
    """The JSON of a ``RegenRequestEvent``, built as a dict on the hot path (a model per
    request costs more than the rest of its handling). Its one twin, the sweep's SQL
    ``format()``, and this builder are both tested to validate against the model and to
    agree on the same row. ``inputs``: the input version and wire fingerprint; ``lane``: the
    request's lane and, in the batch lane, when it must be answered by."""
    payload: dict[str, Any] = {
        "event_id": request_id,
        "user_id": user_id,
        "reason": reason.value,
        "generation": generation,
        "snapshot_hash": snapshot_hash,
        "requested_at": now.isoformat(),
    }
    if trigger:
        payload["trigger"] = trigger
    payload["priority"] = priority
    payload["input_version"], payload["input_fingerprint"] = inputs
    payload["lane"] = lane[0].value
    if lane[1] is not None:
        payload["respond_by"] = lane[1].isoformat()
    return payload


InputEvent = CommentEvent | RequestEvent | GeneratedEvent

MODELS: dict[InputStream, type[CommentEvent] | type[RequestEvent] | type[GeneratedEvent]] = {
    InputStream.COMMENTS: CommentEvent,
    InputStream.REQUESTS: RequestEvent,
    InputStream.GENERATED: GeneratedEvent,
}
