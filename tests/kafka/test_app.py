"""The Faust adapter's own parts that can be checked without a broker."""

from __future__ import annotations

import time

from faust.types import TP

from worker.kafka.app import QuietMonitor


async def test_quiet_monitor_keeps_what_the_stalled_stream_check_reads() -> None:
    """Faust warns "Stream has not started processing" for a partition whose
    ``stream_inbound_time`` is missing: the quiet monitor must still record it."""
    monitor = QuietMonitor()
    tp = TP("signal.comments", 0)
    before = time.monotonic()
    monitor.on_stream_event_in(tp, 7, stream=None, event=None)
    assert monitor.stream_inbound_time[tp] >= before
    assert monitor.events_total == 0  # the rest of the per-event bookkeeping stays off
