"""Property: any byte string is either decoded into a valid model or refused with a reason.
Never an unhandled exception (an agent must not crash on a bad event)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import hostile
from worker.domain.decoder import MAX_JSON_DEPTH, Rejected, RejectReason, decode
from worker.domain.values import MAX_FUTURE_SKEW
from worker.domain.wire import MODELS, InputStream

NOW = datetime(2026, 11, 25, tzinfo=UTC)
streams = st.sampled_from(list(InputStream))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = sorted({name for model in MODELS.values() for name in model.model_fields})
timestamps = st.sampled_from(
    [
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:00:00",
        "1969-12-31T23:59:59Z",
        "2999-01-01T00:00:00Z",
        "not a date",
        "2026-02-30T00:00:00Z",
    ]
)
field_values = st.one_of(
    json_values,
    timestamps,
    st.sampled_from(
        ["comment.created", "comment.deleted", "comment.liked", 0, -1, 2**63, 2**63 - 1, True]
    ),
)
plausible = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=len(FIELDS))


def check(stream: InputStream, raw: bytes) -> None:
    try:
        event = decode(stream, raw, NOW)
    except Rejected as exc:
        refusal = exc
    else:
        assert isinstance(event, MODELS[stream])
        assert event.event_id
        return
    assert isinstance(refusal.reason, RejectReason)
    assert refusal.detail


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.binary(max_size=300))
def test_any_bytes(stream: InputStream, raw: bytes) -> None:
    check(stream, raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(streams, plausible)
def test_any_plausible_object(stream: InputStream, doc: dict[str, Any]) -> None:
    check(stream, json.dumps(doc).encode())


@settings(max_examples=200)
@given(streams, json_values)
def test_any_json_value(stream: InputStream, value: Any) -> None:
    check(stream, json.dumps(value).encode())


# Hostile input (issue 15): extreme numbers and timestamps, wide and deep values,
# duplicate keys at any depth, invalid UTF-8 of every class. Whatever it is, decoding
# returns a valid event or refuses with a reason from the closed set; what it accepts is
# in UTC and within the README's bounds.


REASONS = {r.value for r in RejectReason}


def outcome(stream: InputStream, raw: bytes) -> Any:
    """The event, or the refusal's reason (asserted to be in the closed set)."""
    try:
        event = decode(stream, raw, NOW)
    except Rejected as exc:
        refusal = exc
    else:
        assert isinstance(event, MODELS[stream])
        for name, value in event.timestamps().items():
            if value is None:
                continue
            assert value.utcoffset() == timedelta(0), name
            assert value >= datetime(1970, 1, 1, tzinfo=UTC), name
            if name != "stale_after":
                assert value <= NOW + MAX_FUTURE_SKEW, name
        return event
    assert refusal.reason.value in REASONS
    assert refusal.detail
    return refusal.reason.value


number_tokens = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),  # past 4,300 digits
    st.integers(min_value=1, max_value=400).map(lambda n: "-" + "1" * n + ".5"),
    st.tuples(st.integers(1, 9), st.integers(-2000, 2000)).map(lambda t: f"{t[0]}e{t[1]}"),
    st.tuples(st.floats(allow_nan=False), st.integers(-400, 400)).map(
        lambda t: f"{t[0]!r}e{t[1]}".replace("inf", "1")
    ),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "0.0e0", "1E+308", "1e309"]),
)
ts_fields = st.sampled_from(
    [(s, f) for s, fields in hostile.TIMESTAMP_FIELDS.items() for f in fields]
)


def _zone(offset_minutes: int, colon: bool = True) -> str:
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"


# Plausible instants (around now and 1970) and the extremes a datetime holds, at any
# offset Python accepts (PostgreSQL only up to 15:59).
plausible_timestamps = st.builds(
    lambda at, offset: at.isoformat() + _zone(offset),
    st.one_of(
        st.datetimes(min_value=datetime(2026, 11, 20), max_value=datetime(2026, 11, 28)),
        st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(1970, 1, 2)),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 3)),
        st.datetimes(min_value=datetime(9999, 12, 29), max_value=datetime(9999, 12, 31)),
        st.datetimes(),
    ),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)


@st.composite
def odd_timestamps(draw: st.DrawFn) -> str:
    """RFC 3339-shaped strings with fields out of range, offsets past 23:59, other forms."""
    year = draw(st.sampled_from([1, 1969, 1970, 2026, 9999]) | st.integers(0, 9999))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute = draw(st.integers(0, 24)), draw(st.integers(0, 60))
    second = draw(st.integers(0, 60))
    fraction = draw(st.sampled_from(["", ".5", ".1234567890123", "." + "9" * 50]))
    offset = draw(st.integers(-30 * 60, 30 * 60))
    zone = draw(st.sampled_from(["Z", "z", "", _zone(offset), _zone(offset, colon=False)]))
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    forms = [text, text.replace("T", " "), text[:10], text[:16], str(offset * 60)]
    return draw(st.sampled_from(forms))


timestamp_texts = st.one_of(plausible_timestamps, odd_timestamps())


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(ts_fields, timestamp_texts, timestamp_texts)
def test_any_timestamp_at_any_field(field: tuple[InputStream, str], text: str, other: str) -> None:
    stream, name = field
    doc = hostile.DOCS[stream](**{name: text})
    if stream is InputStream.GENERATED:  # the other timestamp extreme too
        doc["stale_after" if name == "generated_at" else "generated_at"] = other
    outcome(stream, json.dumps(doc).encode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams,
    st.sampled_from(["extra", "user_id", "event_id", "generation", "occurred_at"]),
    number_tokens,
)
def test_any_number_at_any_field(stream: InputStream, name: str, number: str) -> None:
    got = outcome(stream, hostile._with_raw(hostile.DOCS[stream](), name, number.encode()))
    if number in ("NaN", "Infinity", "-Infinity") or (
        number.lstrip("-9") == "" and len(number) > 4300
    ):
        assert got == "not_json"


# JSON trees whose objects are lists of pairs, so that a key may repeat (json.dumps
# cannot write that); keys from a small alphabet make repeats likely.
keys = st.sampled_from(["a", "b", "event_id", "user_id", "é", "\ud83d\ude00", ""])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))


def _pairs_tree(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.lists(st.tuples(keys, inner), max_size=4).map(
        lambda pairs: ("object", pairs)
    )


pair_trees = st.recursive(scalars, _pairs_tree, max_leaves=25)


def _dump(tree: Any) -> str:
    if isinstance(tree, tuple) and tree[:1] == ("object",):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in tree[1]) + "}"
    if isinstance(tree, list):
        return "[" + ",".join(_dump(v) for v in tree) + "]"
    return json.dumps(tree)


def _has_duplicate(tree: Any) -> bool:
    if isinstance(tree, tuple) and tree[:1] == ("object",):
        names = [k for k, _ in tree[1]]
        return len(names) != len(set(names)) or any(_has_duplicate(v) for _, v in tree[1])
    if isinstance(tree, list):
        return any(_has_duplicate(v) for v in tree)
    return False


def _depth_of(tree: Any) -> int:
    if isinstance(tree, tuple) and tree[:1] == ("object",):
        return 1 + max((_depth_of(v) for _, v in tree[1]), default=0)
    if isinstance(tree, list):
        return 1 + max((_depth_of(v) for v in tree), default=0)
    return 0


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(streams, pair_trees, st.sampled_from(["extra", "event_id", "occurred_at", "quotes"]))
def test_duplicate_keys_at_any_depth_are_refused(stream: InputStream, tree: Any, name: str) -> None:
    raw = hostile._with_raw(hostile.DOCS[stream](), name, _dump(tree).encode())
    got = outcome(stream, raw)
    if _has_duplicate(tree):
        assert got == "duplicate_key"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.integers(0, 40), st.integers(0, 300), st.booleans())
def test_deep_and_wide_values(stream: InputStream, depth: int, width: int, objects: bool) -> None:
    value = "[" + ",".join(["0"] * width) + "]"
    for level in range(depth):
        value = f'{{"k{level}":{value}}}' if objects else f"[{value}]"
    wide = "{" + ",".join(f'"w{i}":{i}' for i in range(width)) + "}"
    got = outcome(stream, hostile._with_raw(hostile.DOCS[stream](), "extra", value.encode()))
    # the message is depth 1, "extra" adds the nesting plus the innermost list
    assert (got == "too_deep") is (1 + depth + 1 > MAX_JSON_DEPTH)
    outcome(stream, hostile._with_raw(hostile.DOCS[stream](), "extra", wide.encode()))


# Every class of invalid UTF-8: overlong forms, encoded surrogates, truncated sequences,
# code points past U+10FFFF, bytes that never occur, stray continuation bytes.
invalid_utf8 = st.one_of(
    st.tuples(st.integers(0xC0, 0xC1), st.integers(0x80, 0xBF)).map(bytes),  # overlong 2
    st.tuples(st.just(0xE0), st.integers(0x80, 0x9F), st.integers(0x80, 0xBF)).map(bytes),
    st.tuples(
        st.just(0xF0), st.integers(0x80, 0x8F), st.integers(0x80, 0xBF), st.integers(0x80, 0xBF)
    ).map(bytes),  # overlong 4
    st.tuples(st.just(0xED), st.integers(0xA0, 0xBF), st.integers(0x80, 0xBF)).map(bytes),
    st.tuples(st.integers(0xC2, 0xDF)).map(bytes),  # truncated 2
    st.tuples(st.integers(0xE1, 0xEF), st.integers(0x80, 0xBF)).map(bytes),  # truncated 3
    st.tuples(st.integers(0xF1, 0xF3), st.integers(0x80, 0xBF), st.integers(0x80, 0xBF)).map(
        bytes
    ),  # truncated 4
    st.tuples(
        st.just(0xF4), st.integers(0x90, 0xBF), st.integers(0x80, 0xBF), st.integers(0x80, 0xBF)
    ).map(bytes),  # past U+10FFFF
    st.tuples(st.integers(0xF5, 0xFF), st.integers(0x80, 0xBF)).map(bytes),
    st.integers(0x80, 0xBF).map(lambda b: bytes([b])),  # stray continuation
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(streams, invalid_utf8, st.integers(min_value=0), st.booleans())
def test_invalid_utf8_anywhere_is_refused(
    stream: InputStream, bad: bytes, where: int, in_string: bool
) -> None:
    good = json.dumps(hostile.DOCS[stream]()).encode()
    if in_string:  # inside a string value, where a lenient decoder might let it through
        raw = hostile._with_raw(hostile.DOCS[stream](), "extra", b'"a' + bad + b'b"')
    else:
        at = where % (len(good) + 1)
        raw = good[:at] + bad + good[at:]
    assert outcome(stream, raw) == "not_utf8"
