"""The hostile-input decoder: bytes of an input topic to a wire model, never raising.

Input topics carry plain JSON that people type with kcat, so the decoder is strict about
what matters (ids, types, aware timestamps, sizes) and explains every refusal in one line;
the refusal reason is a closed set (metrics labels) plus a free-text detail (DLQ header).
"""

from __future__ import annotations

import gc
import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from worker.domain.errors import InvalidInput
from worker.domain.values import check_aware
from worker.domain.wire import MODELS, InputEvent, InputStream

MAX_MESSAGE_BYTES = 256 * 1024
MAX_JSON_DEPTH = 8
# Timestamps that legitimately lie ahead (the others are checked against clock skew).
FUTURE_OK = frozenset({"stale_after"})


class RejectReason(StrEnum):
    """Why a message went to the dead-letter topic (a closed set: it labels metrics)."""

    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"
    NOT_OBJECT = "not_object"
    INVALID = "invalid"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_USAGE = "bad_usage"  # a result's ``usage`` is not what a generation can report
    REJECTED_BY_STORE = "rejected_by_store"
    INTERNAL_ERROR = "internal_error"
    UNMAPPED = "unmapped"  # a parked comment whose request was not mapped in time


class Rejected(Exception):
    """A message that cannot be applied; ``reason`` labels it, ``detail`` explains it."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):  # cheap check first: this runs for every object
        seen: set[str] = set()  # one pass: linear however wide the object
        for key, _ in pairs:
            if key in seen:
                raise Rejected(RejectReason.DUPLICATE_KEY, f"key {key[:50]!r} appears twice")
            seen.add(key)
    return value


def _finite(text: str) -> float:
    """JSON numbers past a double's range (``1e999``) would become infinities."""
    value = float(text)
    if not math.isfinite(value):
        raise Rejected(RejectReason.NOT_JSON, f"number {text[:40]} is out of range")
    return value


def _not_json_constant(name: str) -> Any:
    raise Rejected(RejectReason.NOT_JSON, f"{name} is not a JSON value")


def _deeper_than(value: Any, limit: int) -> bool:
    """True when containers nest more than ``limit`` levels: one level at a time, so the
    cost is the number of containers' children within ``limit`` levels (no recursion)."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


# One decoder for every message (``json.loads`` with a hook builds a new one per call).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_keys,
    parse_float=_finite,
    parse_constant=_not_json_constant,
)


def _parse(text: str) -> Any:
    """JSON text to values, with the cyclic garbage collector paused: parsing makes only
    new acyclic containers (nothing to collect), and a message of many small containers
    otherwise triggers collections that cost ten times the parsing."""
    if not gc.isenabled():
        return _DECODER.decode(text)
    gc.disable()
    try:
        return _DECODER.decode(text)
    finally:
        gc.enable()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Bytes to a JSON object, or ``Rejected`` naming what is wrong with them."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Rejected(RejectReason.TOO_LARGE, f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(RejectReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = _parse(text)
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, "JSON nesting too deep") from None
    except json.JSONDecodeError as exc:
        raise Rejected(
            RejectReason.NOT_JSON, f"{exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit limit
        raise Rejected(RejectReason.NOT_JSON, _describe(exc)) from None
    if not isinstance(value, dict):
        raise Rejected(
            RejectReason.NOT_OBJECT, f"expected a JSON object, got {type(value).__name__}"
        )
    # The bracket count bounds the depth: typical flat events skip the walk.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > MAX_JSON_DEPTH and _deeper_than(value, MAX_JSON_DEPTH):
        raise Rejected(RejectReason.TOO_DEEP, f"JSON nested deeper than {MAX_JSON_DEPTH}")
    return value


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "(unprintable)"
    return f"{type(exc).__name__}: {text}"[:300]


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _reason_of(exc: ValidationError) -> RejectReason:
    """``bad_timestamp`` or ``bad_usage`` when that is all that is wrong, else ``invalid``."""
    errors = exc.errors()
    if all(e["type"] == "timestamp_range" for e in errors):
        return RejectReason.BAD_TIMESTAMP
    if all(e["loc"][:1] == ("usage",) for e in errors):
        return RejectReason.BAD_USAGE
    return RejectReason.INVALID


def decode(stream: InputStream, raw: bytes | None, now: datetime) -> InputEvent:
    """Decode one message of ``stream``; raises ``Rejected`` and nothing else.

    Whatever a library raises on an input nobody thought of becomes a refusal too
    (``internal_error``, naming the exception): one message must never stop a partition."""
    try:
        return _decode(stream, raw, now)
    except Rejected:
        raise
    except RecursionError:
        raise Rejected(RejectReason.TOO_DEEP, "nesting too deep to decode") from None
    except Exception as exc:
        raise Rejected(RejectReason.INTERNAL_ERROR, f"decoder failed: {_describe(exc)}") from None


def _decode(stream: InputStream, raw: bytes | None, now: datetime) -> InputEvent:
    if raw is None:
        raise Rejected(RejectReason.NOT_JSON, "empty message (tombstone)")
    data = parse_json_object(raw)
    try:
        event = MODELS[stream].model_validate(data)
    except ValidationError as exc:
        raise Rejected(_reason_of(exc), _explain(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise Rejected(RejectReason.INVALID, str(exc)[:300]) from None
    try:
        for name, value in event.timestamps().items():
            check_aware(name, value, None if name in FUTURE_OK else now)
    except InvalidInput as exc:
        raise Rejected(RejectReason.BAD_TIMESTAMP, str(exc)) from None
    return event
