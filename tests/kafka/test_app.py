"""The Faust adapter's own parts that can be checked without a broker."""

from __future__ import annotations

import time

from faust.types import TP

from worker.kafka.app import QuietMonitor
from worker.kafka.consumer import note_progress


async def test_delivered_partitions_keep_what_the_stalled_stream_check_reads() -> None:
    """Faust warns "Stream has not started processing" for a partition whose
    ``stream_inbound_time`` is missing: with no streams, the consumer records it for the
    partitions it delivered, and the quiet monitor counts nothing per message."""
    monitor = QuietMonitor()
    tp = TP("signal.comments", 0)
    before = time.monotonic()
    monitor.on_message_in(tp, 7, message=None)
    note_progress(monitor, {tp})
    assert monitor.stream_inbound_time[tp] >= before
    assert TP("signal.comments", 1) not in monitor.stream_inbound_time
    assert monitor.messages_received_total == 0  # the per-message bookkeeping stays off
