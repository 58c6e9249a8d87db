"""Hostile messages (issue 15): nothing a producer sends makes the decoder raise anything but
``Rejected``, take superlinear time, or hand the database a value it refuses.

The messages are in ``tests/helpers/hostile.py`` (shared with the fuzzer's seeds and
``bench/decode_cost.py``)."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers import hostile
from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import generated, raw, result
from worker.domain import decoder, wire
from worker.domain.decoder import Rejected, RejectReason, decode
from worker.domain.wire import MODELS, InputStream
from worker.services.pipeline import Pipeline
from worker.services.store import HighlightStore

NOW = datetime(2026, 11, 25, tzinfo=UTC)
C, R, G = InputStream.COMMENTS, InputStream.REQUESTS, InputStream.GENERATED
HOSTILE = list(hostile.messages())


def outcome(stream: InputStream, message: bytes, now: datetime = NOW) -> wire.InputEvent | str:
    """The decoded event, or the reason it was refused; anything else raised fails."""
    try:
        return decode(stream, message, now)
    except Rejected as exc:
        refusal = exc
    assert isinstance(refusal.reason, RejectReason)
    assert refusal.detail
    return refusal.reason.value


@pytest.mark.parametrize(
    ("stream", "message"), [(s, m) for _, s, m in HOSTILE], ids=[n for n, *_ in HOSTILE]
)
def test_a_hostile_message_is_refused_with_a_reason_or_decoded_in_utc(
    stream: InputStream, message: bytes
) -> None:
    got = outcome(stream, message)
    if isinstance(got, str):
        return
    assert isinstance(got, MODELS[stream])
    for name, value in got.timestamps().items():
        assert value is None or value.utcoffset() == timedelta(0), name


@pytest.mark.parametrize("stream", list(InputStream))
@pytest.mark.parametrize("field", ["extra", "user_id", "event_id"])
def test_an_integer_past_pythons_digit_limit_is_refused_as_not_json(
    stream: InputStream, field: str
) -> None:
    """json raises a plain ValueError (not JSONDecodeError) for an integer of more than
    4,300 digits: it used to escape the decoder and crash the agent."""
    message = hostile._with_raw(hostile.DOCS[stream](), field, b"1" * 5000)
    assert outcome(stream, message) == "not_json"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("x"),
        TypeError("x"),
        KeyError("x"),
        IndexError("x"),
        RuntimeError("x"),
        OverflowError("x"),
        RecursionError("x"),
        ZeroDivisionError("x"),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"),
        AttributeError("x"),
        AssertionError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("stage", ["json", "model"])
def test_whatever_raises_inside_the_decoder_becomes_a_rejected(
    monkeypatch: pytest.MonkeyPatch, exc: Exception, stage: str
) -> None:
    """The mechanism, not the instance: whichever exception a library raises on some input
    nobody thought of, the message is refused with a reason from the closed set."""

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise exc

    if stage == "json":
        monkeypatch.setattr(decoder, "_DECODER", type("D", (), {"decode": staticmethod(boom)})())
    else:
        monkeypatch.setitem(MODELS, C, type("M", (), {"model_validate": staticmethod(boom)}))
    got = outcome(C, json.dumps(hostile.DOCS[C]()).encode())
    assert got in {r.value for r in RejectReason}


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E400", "NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("stream", list(InputStream))
def test_non_finite_numbers_are_refused(stream: InputStream, number: str) -> None:
    message = hostile._with_raw(hostile.DOCS[stream](), "extra", number.encode())
    assert outcome(stream, message) == "not_json"


def test_finite_numbers_in_unknown_fields_are_ignored() -> None:
    for number in ["1e-999", "1.5", "-0.0", "1e308", "9" * 4300]:
        message = hostile._with_raw(hostile.DOCS[C](), "extra", number.encode())
        assert isinstance(outcome(C, message), wire.CommentEvent), number


# Decoding cost is the benchmark's: `python -m bench --only decode` (bench/decode_cost.py).


# Timestamps: normalised to UTC, so that every value the decoder accepts fits PostgreSQL.


def _timestamp_fields(model: type[Any]) -> set[str]:
    hints = typing.get_type_hints(model, include_extras=True)
    return {
        name
        for name in model.model_fields
        if "datetime" in str(hints[name]) or "Timestamp" in str(hints[name])
    }


@pytest.mark.parametrize("stream", list(InputStream))
def test_every_timestamp_field_is_checked(stream: InputStream) -> None:
    event = decode(stream, json.dumps(hostile.DOCS[stream]()).encode(), NOW)
    assert set(event.timestamps()) == _timestamp_fields(MODELS[stream])
    assert _timestamp_fields(MODELS[stream]) == set(hostile.TIMESTAMP_FIELDS[stream])


FIELDS = [(s, f) for s, fields in hostile.TIMESTAMP_FIELDS.items() for f in fields]


@pytest.mark.parametrize(("stream", "field"), FIELDS)
@pytest.mark.parametrize("offset", ["+23:59", "-23:59", "+16:00", "-16:00", "+15:59", "+05:30"])
def test_any_offset_is_normalised_to_utc(stream: InputStream, field: str, offset: str) -> None:
    """PostgreSQL holds offsets up to 15:59 only; Python (and the decoder) up to 23:59."""
    value = "2026-11-24T09:30:00" + offset
    doc = hostile.DOCS[stream](**{field: value})
    if field == "stale_after":
        doc["generated_at"] = "2026-11-20T00:00:00Z"
    event = decode(stream, json.dumps(doc).encode(), NOW)
    got = event.timestamps()[field]
    assert got is not None
    assert got.utcoffset() == timedelta(0)
    assert got == datetime.fromisoformat(value)


EXTREMES: list[tuple[str, str | None, str | None]] = [
    # value, reason for every field but stale_after, reason for stale_after (None: accepted;
    # a stale_after before 1970 is before generated_at too, which is checked first)
    ("1970-01-01T00:00:00Z", None, "invalid"),  # stale_after before generated_at
    ("1969-12-31T23:59:59Z", "bad_timestamp", "invalid"),
    ("1969-12-31T23:30:00-01:00", None, None),  # 00:30 UTC on 1 January 1970
    ("1970-01-01T00:30:00+01:00", "bad_timestamp", "invalid"),  # 1969 in UTC
    ("0001-01-01T00:00:00Z", "bad_timestamp", "invalid"),
    ("0001-01-01T00:30:00+01:00", "bad_timestamp", "bad_timestamp"),  # before year 1 in UTC
    ("9999-12-31T23:59:59Z", "bad_timestamp", None),
    ("9999-12-31T23:59:59+01:00", "bad_timestamp", None),
    ("9999-12-31T23:59:59-01:00", "bad_timestamp", "bad_timestamp"),  # after 9999 in UTC
    ("2026-11-26T23:00:00Z", "bad_timestamp", None),  # more than a day ahead
    ("2026-11-25T23:00:00Z", None, None),  # within a day: clock skew
    ("2026-11-24T09:30:00", "bad_timestamp", "bad_timestamp"),  # naive
    ("2026-11-24T09:30:00.123456789Z", None, None),
    ("1700000000", "invalid", "invalid"),  # epoch seconds: not RFC 3339
    ("2026-11-24", "invalid", "invalid"),
    ("2026-11-24T09:30Z", "invalid", "invalid"),
    ("2026-11-24T09:30:00+0530", "invalid", "invalid"),
    ("2026-11-24T09:30:00+24:00", "invalid", "invalid"),
    ("2026-02-30T00:00:00Z", "invalid", "invalid"),
    ("+12026-11-24T09:30:00Z", "invalid", "invalid"),
]


@pytest.mark.parametrize(("stream", "field"), FIELDS)
@pytest.mark.parametrize(("value", "reason", "stale_reason"), EXTREMES)
def test_extreme_and_odd_timestamps(
    stream: InputStream, field: str, value: str, reason: str | None, stale_reason: str | None
) -> None:
    """README: RFC 3339 with a zone; not before 1970 and not more than a day ahead (except
    ``stale_after``, which lies ahead by design, within what a datetime holds in UTC)."""
    doc = hostile.DOCS[stream](**{field: value})
    if field == "stale_after":
        doc["generated_at"] = "1970-01-01T00:00:01Z"
    elif stream is G:
        doc.pop("stale_after")
    got = outcome(stream, json.dumps(doc).encode())
    expected = stale_reason if field == "stale_after" else reason
    if expected is None:
        assert isinstance(got, MODELS[stream]), got
    else:
        assert got == expected


async def test_offsets_postgresql_cannot_hold_are_applied_in_one_batch(
    sessions: async_sessionmaker[AsyncSession], store: HighlightStore
) -> None:
    """A comment at +23:59 used to fail the set-based batch on PostgreSQL ("time zone
    displacement out of range"), dead-lettering it as internal_error after a fallback to
    one transaction per event."""
    clock = FakeClock()
    pipeline = Pipeline(sessions, clock=clock)
    await store.upsert_auto(result(1), "snap-a")
    await store.upsert_auto(result(2), "snap-a")
    at = "2026-01-02T12:01:00+23:59"  # T0 + 2 minutes
    doc = hostile.DOCS[C](occurred_at=at, user_id=1, event_id="c-east")
    west = hostile.DOCS[C](occurred_at="2026-01-01T12:03:00-00:00", user_id=2, event_id="c-2")
    res = await pipeline.process(C, [raw(doc), raw(west)])
    assert res.dead_letters == []
    assert res.outcomes == {("comments", "stale_marked"): 2}
    mapping = {"event_id": "m", "request_id": "r9", "user_id": 3, "occurred_at": at}
    res = await pipeline.process(R, [raw(mapping)])
    assert res.dead_letters == []
    res = await pipeline.process(G, [generated("g", 1, T0, "snap-b", generated_at=at)])
    assert [d.detail for d in res.dead_letters] == []
    row = await store.get(1)
    assert row is not None and row.generated_at == T0 + timedelta(minutes=2)
