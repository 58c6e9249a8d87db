"""Property: any byte string is either decoded into a valid model or refused with a reason.
Never an unhandled exception (an agent must not crash on a bad event)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.domain.messages import MODELS, InputStream, Rejected, RejectReason, decode

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
