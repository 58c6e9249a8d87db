"""Hostile messages for the decoders: each a known way to make a JSON decoder raise
something unexpected, take superlinear time, or let through what the database refuses.

Shared by the decoder tests, the fuzzer's seed corpus (``tests/fuzz/corpus/decoders``,
written by ``python -m tests.helpers.hostile``) and ``bench/decode_cost.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from worker.domain.decoder import MAX_MESSAGE_BYTES
from worker.domain.wire import InputStream

C, R, G = InputStream.COMMENTS, InputStream.REQUESTS, InputStream.GENERATED
STREAM_BYTE = {C: b"\x00", R: b"\x01", G: b"\x02"}  # the fuzzer's first byte picks the stream
BUDGET = MAX_MESSAGE_BYTES - 64  # room for the envelope around a filler
CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "decoders"


def _comment(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "type": "comment.created",
        "comment_id": "c-1",
        "request_id": "r-1",
        "user_id": 42,
        "occurred_at": "2026-11-24T09:30:00Z",
    }
    doc.update(fields)
    return doc


def _request(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "m-1",
        "request_id": "r-1",
        "user_id": 42,
        "occurred_at": "2026-11-24T09:30:00Z",
    }
    doc.update(fields)
    return doc


def _generated(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "g-1",
        "user_id": 42,
        "bio_text": "Unblocks everyone.",
        "proof_points": ["p"],
        "quotes": ["q"],
        "source_group": "signal-v1",
        "snapshot_hash": "sha256:9f2c",
        "llm_model": "highlighter-2",
        "generated_at": "2026-11-24T09:31:10Z",
        "stale_after": "2026-12-01T09:31:10Z",
    }
    doc.update(fields)
    return doc


# The valid message of each stream that every hostile variant starts from (its bytes are
# in the fuzz corpus); documents for other tests come from ``tests.helpers.factories``.
DOCS: dict[InputStream, Callable[..., dict[str, Any]]] = {C: _comment, R: _request, G: _generated}
TIMESTAMP_FIELDS = {C: ["occurred_at"], R: ["occurred_at"], G: ["generated_at", "stale_after"]}


def _with_raw(doc: dict[str, Any], field: str, raw: bytes) -> bytes:
    """``doc`` as JSON with ``field`` holding ``raw`` verbatim (what json.dumps cannot write:
    huge numbers, NaN, duplicate keys, ...)."""
    marker = "\x01MARKER\x01"
    text = json.dumps({**doc, field: marker}).encode()
    return text.replace(json.dumps(marker).encode(), raw)


def _repeat(item: bytes, sep: bytes = b",", budget: int = BUDGET) -> bytes:
    return sep.join([item] * (budget // (len(item) + len(sep))))


def _keys_within(budget: int) -> int:
    """How many keys ``"k0":0, "k1":0, ...`` fit in ``budget`` bytes."""
    n = size = 0
    while size + len(b'"k%d":0,' % n) <= budget:
        size += len(b'"k%d":0,' % n)
        n += 1
    return n


def _wide(n: int, extra: bytes = b"") -> bytes:
    return b"{" + b",".join(b'"k%d":0' % i for i in range(n)) + extra + b"}"


def messages(budget: int = BUDGET) -> Iterator[tuple[str, InputStream, bytes]]:
    """(name, stream, bytes): every message a decoder must refuse or accept quickly; the
    fillers make each message about ``budget`` bytes (the largest allowed by default)."""
    for stream, doc in DOCS.items():
        base = doc()
        room = budget - len(json.dumps(base)) - 32
        # Numbers: past Python's 4,300-digit limit (a plain ValueError), at it, non-finite.
        yield f"{stream}-int-5000-digits", stream, _with_raw(base, "extra", b"1" * 5000)
        yield f"{stream}-user-id-5000-digits", stream, _with_raw(base, "user_id", b"9" * 5000)
        yield (
            f"{stream}-ints-4300-digits",
            stream,
            _with_raw(base, "extra", b"[" + _repeat(b"7" * 4300, budget=room) + b"]"),
        )
        for name, number in [
            ("1e999", b"1e999"),
            ("-1e999", b"-1e999"),
            ("NaN", b"NaN"),
            ("Infinity", b"Infinity"),
            ("-Infinity", b"-Infinity"),
            ("long-mantissa", b"1." + b"3" * room),
            ("tiny", b"0." + b"0" * room + b"1"),
            ("1e-999", b"1e-999"),
        ]:
            yield f"{stream}-float-{name}", stream, _with_raw(base, "extra", number)
        yield (
            f"{stream}-floats",
            stream,
            _with_raw(base, "extra", b"[" + _repeat(b"0.5", budget=room) + b"]"),
        )
        # Duplicate keys: last of a wide object, at top level and nested, and early.
        n = _keys_within(room - 20)
        yield (
            f"{stream}-duplicate-last-top",
            stream,
            json.dumps(base).encode()[:-1] + b"," + _wide(n)[1:-1] + b',"k%d":1}' % (n - 1),
        )
        yield (
            f"{stream}-duplicate-last-nested",
            stream,
            _with_raw(base, "extra", _wide(n, b',"k%d":1' % (n - 1))),
        )
        yield (
            f"{stream}-duplicate-event-id",
            stream,
            json.dumps(base).encode()[:-1] + b', "event_id": "e-2"}',
        )
        yield f"{stream}-wide", stream, _with_raw(base, "extra", _wide(n))
        # Nesting: past the recursion limit, just past the 8 allowed, many shallow containers.
        deep = budget // 2
        yield f"{stream}-deep-arrays", stream, b"[" * deep + b"]" * deep
        yield (
            f"{stream}-deep-objects",
            stream,
            _with_raw(base, "extra", b'{"a":' * (deep // 6) + b"1" + b"}" * (deep // 6)),
        )
        yield (
            f"{stream}-deep-990",
            stream,
            _with_raw(base, "extra", b"[" * 990 + b"]" * 990),
        )
        yield f"{stream}-depth-9", stream, _with_raw(base, "extra", b"[" * 9 + b"]" * 9)
        for name, item in [("objects", b"{}"), ("arrays", b"[]"), ("pairs", b'{"x":1}')]:
            yield (
                f"{stream}-many-empty-{name}",
                stream,
                _with_raw(base, "extra", b"[" + _repeat(item, budget=room) + b"]"),
            )
        yield (
            f"{stream}-nested-wide",
            stream,
            _with_raw(base, "extra", b"[" + _repeat(b"[[[[[[0]]]]]]", budget=room) + b"]"),
        )
        # Strings: long, escapes, surrogates escaped alone and in pairs, NUL.
        yield f"{stream}-long-string", stream, _with_raw(base, "extra", b'"' + b"x" * room + b'"')
        yield (
            f"{stream}-escapes",
            stream,
            _with_raw(base, "extra", b'"' + _repeat(b"\\u00e9", b"", room) + b'"'),
        )
        yield (
            f"{stream}-backslashes",
            stream,
            _with_raw(base, "extra", b'"' + _repeat(b"\\\\", b"", room) + b'"'),
        )
        yield (
            f"{stream}-surrogate-pairs",
            stream,
            _with_raw(base, "extra", b'"' + _repeat(b"\\ud83d\\ude00", b"", room) + b'"'),
        )
        for field in ["event_id", "extra", *TIMESTAMP_FIELDS[stream]]:
            yield f"{stream}-lone-surrogate-{field}", stream, _with_raw(base, field, b'"\\ud800"')
            yield f"{stream}-nul-{field}", stream, _with_raw(base, field, b'"a\\u0000b"')
        yield f"{stream}-whitespace", stream, b" " * room + json.dumps(base).encode()
        yield f"{stream}-bom", stream, b"\xef\xbb\xbf" + json.dumps(base).encode()
        yield (
            f"{stream}-too-large",
            stream,
            _with_raw(base, "extra", b'"' + b"x" * MAX_MESSAGE_BYTES + b'"'),
        )
        # Invalid UTF-8 of every class, inside a string value.
        for name, bad in [
            ("overlong-2", b"\xc0\xaf"),
            ("overlong-3", b"\xe0\x80\xaf"),
            ("overlong-4", b"\xf0\x80\x80\xaf"),
            ("surrogate-encoded", b"\xed\xa0\x80"),
            ("surrogate-pair-encoded", b"\xed\xa0\xbd\xed\xb8\x80"),
            ("truncated-2", b"\xc3"),
            ("truncated-3", b"\xe2\x82"),
            ("truncated-4", b"\xf0\x9f\x98"),
            ("above-10ffff", b"\xf4\x90\x80\x80"),
            ("f5", b"\xf5\x80\x80\x80"),
            ("lone-continuation", b"\x80"),
            ("fe-ff", b"\xfe\xff"),
        ]:
            yield f"{stream}-utf8-{name}", stream, _with_raw(base, "extra", b'"' + bad + b'"')
        # Timestamps: offsets PostgreSQL cannot hold, extreme and edge dates, odd forms.
        for field in TIMESTAMP_FIELDS[stream]:
            for name, value in [
                ("+23:59", "2026-11-24T09:30:00+23:59"),
                ("-23:59", "2026-11-24T09:30:00-23:59"),
                ("+16:00", "2026-11-24T09:30:00+16:00"),
                ("+24:00", "2026-11-24T09:30:00+24:00"),
                ("year-1", "0001-01-01T00:00:00Z"),
                ("year-1-east", "0001-01-01T00:30:00+01:00"),
                ("year-9999", "9999-12-31T23:59:59Z"),
                ("year-9999-west", "9999-12-31T23:59:59-01:00"),
                ("1969", "1969-12-31T23:59:59Z"),
                ("1969-west", "1969-12-31T23:30:00-01:00"),
                ("epoch", "1970-01-01T00:00:00Z"),
                ("epoch-seconds", "1700000000"),
                ("date-only", "2026-11-24"),
                ("naive", "2026-11-24T09:30:00"),
                ("no-seconds", "2026-11-24T09:30Z"),
                ("long-fraction", "2026-11-24T09:30:00." + "1" * room + "Z"),
                ("feb-30", "2026-02-30T00:00:00Z"),
            ]:
                yield f"{stream}-{field}-{name}", stream, json.dumps(base | {field: value}).encode()


SEED_BUDGET = 1024  # seeds stay small (the fuzzer mutates them)


def write_corpus(directory: Path = CORPUS) -> int:
    """Write every hostile message, at seed size, as a fuzzer seed (stream byte + message)."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, stream, raw in messages(SEED_BUDGET):
        if len(raw) > MAX_MESSAGE_BYTES:
            continue  # refused by its length alone: nothing for the fuzzer to learn

        (directory / name).write_bytes(STREAM_BYTE[stream] + raw)
        count += 1
    return count


if __name__ == "__main__":
    print(f"wrote {write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)} seeds")
