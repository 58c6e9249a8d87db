"""Clocks cannot freeze anything: a timestamp from another machine that lies further
ahead of its receipt than any working clock can is clamped to the receipt time.

Every input topic's timestamps (``occurred_at`` of comments and request mappings,
``generated_at`` of results: ``InputEvent.timestamps()``) were written by other machines'
clocks, and the freshness rules compare them with each other. One clock 20 h ahead used to
freeze a profile for 20 h (a result "from the future" includes every later comment and
supersedes every correct result) or make every freshness scan pay for a regeneration (a
comment "from the future" is never included). So a timestamp more than ``max_skew`` ahead
of the receiving worker's receipt time is read as the receipt time: the moment this
worker learnt of the event is the latest moment it can honestly have happened.

Clamped, not refused: refusing a result throws away a paid generation and refusing a
comment loses a real comment (its profile would never learn of it), while the clamped
value is what the event means in every rule (the comment is new, the result is now). A
timestamp more than a day ahead (``values.MAX_FUTURE_SKEW``) is still refused by the
decoder: that is not a clock but a wrong date. Timestamps that legitimately lie ahead
(``decoder.FUTURE_OK``: a result's ``stale_after``) are left alone. The caller counts and
logs what was clamped (``wb_clock_skew_clamped_total``).

Why the receipt time and not the worker's clock at the rule: it is read once per batch,
before the transaction, by the one place that decodes (``services.pipeline``), so every
event of a batch is bounded by the same reading.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.domain.decoder import FUTURE_OK
from worker.domain.wire import InputEvent

# NTP-synced machines differ by milliseconds; a generator's or Signal's batch latency
# makes timestamps late, never early; anything minutes ahead is a broken clock.
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=5)


def clamped_to_receipt(
    event: InputEvent, received_at: datetime, max_skew: timedelta
) -> tuple[InputEvent, list[str]]:
    """``event`` with every timestamp more than ``max_skew`` ahead of ``received_at`` set
    to ``received_at``, and the names of the fields it clamped (empty: ``event`` itself).
    Runs for every event: the common case (nothing ahead) builds nothing."""
    limit = received_at + max_skew
    ahead: dict[str, datetime] = {}
    for name, value in event.timestamps().items():
        if value is not None and value > limit and name not in FUTURE_OK:
            ahead[name] = received_at
    if not ahead:
        return event, []
    return event.model_copy(update=ahead), sorted(ahead)
