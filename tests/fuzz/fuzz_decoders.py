"""Coverage-guided fuzzing of the three input decoders (comments, request mappings,
generated results) with atheris (libFuzzer):

    python tests/fuzz/fuzz_decoders.py -max_total_time=30 tests/fuzz/corpus/decoders

An input's first byte picks the stream (modulo 3), the rest is the message. The invariant
is the decoder's contract: it returns a valid event of that stream, its timestamps in UTC
and within the README's bounds, or raises ``Rejected`` with a reason from the closed set
and a detail; any other exception is a crash (libFuzzer saves the input as
``crash-<sha1>``, use ``-artifact_prefix=DIR/``). Time per KiB is not asserted here
(``bench/decode_cost.py`` measures it, ``tests/properties/test_hostile_messages.py``
checks it is linear).

libFuzzer adds the inputs it finds interesting to the first corpus directory: fuzz a copy
(``cp -r tests/fuzz/corpus/decoders /tmp/c``) unless new seeds are wanted. The seeds are
written by ``python -m tests.helpers.hostile``; ``tests/fuzz/decoders.dict`` holds tokens
worth trying (``-dict=tests/fuzz/decoders.dict``).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import atheris

# The libraries first, uninstrumented (coverage of pydantic's Python glue and
# SQLAlchemy's would only dilute the feedback); then the project's modules, instrumented.
import pydantic  # noqa: F401
import sqlalchemy  # noqa: F401

with atheris.instrument_imports(include=["worker"]):
    from worker.domain.decoder import Rejected, RejectReason, decode
    from worker.domain.values import EARLIEST, MAX_FUTURE_SKEW
    from worker.domain.wire import MODELS, InputStream

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STREAMS = list(InputStream)  # comments, requests, generated: seed byte 0, 1, 2
REASONS = frozenset(RejectReason)
UTC_OFFSET = timedelta(0)


def check(data: bytes) -> None:
    """One input against the decoder's contract; raises on a violation."""
    if not data:
        return
    stream, raw = STREAMS[data[0] % len(STREAMS)], data[1:]
    try:
        event = decode(stream, raw, NOW)
    except Rejected as exc:
        if exc.reason not in REASONS or not exc.detail:
            raise AssertionError(f"refusal outside the contract: {exc!r}") from None
        return
    if not isinstance(event, MODELS[stream]):
        raise AssertionError(f"{stream}: decoded a {type(event).__name__}")
    for name, value in event.timestamps().items():
        if value is None:
            continue
        if value.utcoffset() != UTC_OFFSET:
            raise AssertionError(f"{name} {value.isoformat()} is not in UTC")
        if value < EARLIEST or (name != "stale_after" and value > NOW + MAX_FUTURE_SKEW):
            raise AssertionError(f"{name} {value.isoformat()} is out of bounds")


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
