"""Worst-case decoding cost: microseconds of CPU per KiB over the hostile messages.

    python -m bench.decode_cost [--runs N]

Each hostile message of ``tests/helpers/hostile.py`` (huge numbers, duplicate keys last in
256 KiB objects, deep and wide values, long strings, odd timestamps, invalid UTF-8, ...)
is decoded ``runs`` times; its cost is the fastest run in CPU time of this thread (another
process on a shared core does not count), per KiB, with messages under 1 KiB counted as
1 KiB (their cost is the fixed per-message part). The reference is ``json.loads`` of the
same bytes, measured the same way: what parsing alone costs, without the duplicate-key,
depth, number and model checks. The garbage collector runs with Python's defaults (the
worker raises its thresholds after start-up, which makes both figures smaller).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.harness import Row, ok
from tests.helpers import hostile
from worker.domain.decoder import Rejected, decode
from worker.domain.wire import InputStream

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Cost:
    name: str
    size: int
    decode_us_per_kib: float
    json_loads_us_per_kib: float


def _fastest(action: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.thread_time()
        # Refusing is part of the cost; json.loads raises on many of them.
        with contextlib.suppress(Rejected, ValueError, RecursionError):
            action()
        best = min(best, time.thread_time() - started)
    return best


def costs(
    messages: Iterable[tuple[str, InputStream, bytes]] | None = None, runs: int = 5
) -> list[Cost]:
    """Per message: decode and ``json.loads`` in microseconds of CPU per KiB."""
    out = []
    for name, stream, raw in hostile.messages() if messages is None else messages:
        kib = max(len(raw), 1024) / 1024
        decoding = _fastest(functools.partial(decode, stream, raw, NOW), runs)
        parsing = _fastest(functools.partial(json.loads, raw), runs)
        out.append(Cost(name, len(raw), decoding * 1e6 / kib, parsing * 1e6 / kib))
    return out


def worst_case(runs: int = 5) -> tuple[Cost, int]:
    """The message that costs most per KiB to decode, and how many were measured."""
    measured = costs(runs=runs)
    return max(measured, key=lambda c: c.decode_us_per_kib), len(measured)


def decode_row() -> Row:
    """Worst-case decode cost per KiB over the hostile messages (``worst_case``)."""
    worst, count = worst_case()
    return (
        f"decode, worst of {count} hostile messages ({worst.name})",
        f"{worst.decode_us_per_kib:.0f} us/KiB",
        f"{worst.json_loads_us_per_kib:.0f} us/KiB (json.loads)",
        "linear (<= 3x json.loads)",
        f"{worst.decode_us_per_kib / worst.json_loads_us_per_kib:.1f}x "
        f"{ok(worst.decode_us_per_kib <= 3 * worst.json_loads_us_per_kib)}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="decodes per message (fastest)")
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest")
    args = parser.parse_args(argv)
    measured = costs(runs=args.runs)
    worst = max(measured, key=lambda c: c.decode_us_per_kib)
    for cost in sorted(measured, key=lambda c: -c.decode_us_per_kib)[: args.top]:
        print(
            f"  {cost.decode_us_per_kib:8.1f} us/KiB (json.loads {cost.json_loads_us_per_kib:6.1f})"
            f"  {cost.size:7d} B  {cost.name}"
        )
    print(
        f"worst-case decode µs/KiB over {len(measured)} hostile messages: "
        f"{worst.decode_us_per_kib:.1f} ({worst.name}, {worst.size} bytes) "
        f"(reference: json.loads of the same bytes: {worst.json_loads_us_per_kib:.1f})"
    )


if __name__ == "__main__":
    main()
