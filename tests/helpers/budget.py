"""Reading a regeneration budget off a topic's broker timestamps."""

from __future__ import annotations

import json
from typing import Any

# Broker timestamps are the relay's publish times, not the scheduler's step times: the
# bucket earns from a step's commit and its requests reach the broker a relay cycle later
# (0.03-0.7 s measured on the 2-core machine under load; on 2026-12-06 the fault suite with
# four test processes measured up to 0.85 s, at main before that day's changes too: 53-85
# requests beyond at 100/s), so a window may hold up to rate x that lag more than
# ``burst + rate x length``. A worker that ignored the budget exceeds it by its whole
# backlog (hundreds here), far beyond this allowance.
RELAY_LAG_ALLOWANCE_S = 1.0


def budget_excess(first_seen: list[float], rate_per_s: float, burst: int) -> float:
    """How far the busiest window exceeds the budget: the largest
    ``count(window) - rate * length(window) - burst`` over all windows of the sorted
    timestamps ``first_seen`` (seconds), in linear time (a window [i, j] holds
    ``j - i + 1`` requests)."""
    worst, lowest = float("-inf"), float("inf")
    for j, at in enumerate(first_seen):
        lowest = min(lowest, j - rate_per_s * at)
        worst = max(worst, (j - rate_per_s * at) - lowest + 1 - burst)
    return worst


def first_seen(records: list[Any]) -> list[float]:
    """Sorted broker timestamps (s) of each request's first copy (the relay may publish a
    request twice after a crash; consumers drop the copy by ``event_id``)."""
    first: dict[str, float] = {}
    for record in records:
        first.setdefault(json.loads(record.value)["event_id"], record.timestamp / 1000)
    return sorted(first.values())


def assert_within_budget(times: list[float], rate_per_s: float, burst: int) -> float:
    """Fail when a window of ``times`` exceeds the budget by more than the relay's lag;
    returns the excess (<= 0: within the budget)."""
    excess = budget_excess(times, rate_per_s, burst)
    allowed = rate_per_s * RELAY_LAG_ALLOWANCE_S
    assert excess <= allowed, f"{excess:.0f} requests beyond the budget in one window"
    return excess
