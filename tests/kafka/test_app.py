"""The Faust adapter's own parts that can be checked without a broker."""

from __future__ import annotations

import logging
import time

import faust
import pytest
from faust.types import TP

from worker.kafka.app import QuietMonitor, Worker, faust_app
from worker.kafka.consumer import BUSY_FETCH_WAIT_MS, FetchPace, note_progress, use_fetch_pace
from worker.settings import EMBEDDED_BUSY_MIN_BYTES, Settings


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


def test_a_quiet_log_level_keeps_debug_records_unbuilt() -> None:
    """At ``WB_LOG_LEVEL=warning`` Faust's terminal spinner set the root logger to DEBUG, and
    every debug call of aiokafka's fetcher built a record for nothing (4 % of the worker's
    CPU at 2,000 comments/s): the worker has no spinner, so debug stays off."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    app = faust.App("wb-test-logging", broker="kafka://127.0.0.1:9", autodiscover=False)
    worker = Worker(app, 5.0, loglevel="warning", redirect_stdouts=False)
    try:
        worker._setup_logging()
        assert worker.spinner is None
        assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("aiokafka").isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_the_fetch_pace_is_busy_while_messages_flow_and_idle_once_they_stop() -> None:
    """While messages flow each fetch waits ``BUSY_FETCH_WAIT_MS`` for the busy min bytes
    (``WB_CONSUMER_BUSY_MIN_BYTES``; Tansu held a fetch its whole max wait while comments
    arrived; Kafka answered each producer batch with a fetch of its own); two busy waits
    without a message put ``WB_CONSUMER_FETCH_WAIT`` back, also while partitions are paused."""
    idle, busy = FetchPace.idle(100), FetchPace.busy(100, 4096)
    assert idle.after(fetched=True, quiet_s=0.0, busy=busy, idle=idle) == busy
    assert (busy.max_wait_ms, busy.min_bytes) == (BUSY_FETCH_WAIT_MS, 4096)
    assert busy.getmany_s == 2 * BUSY_FETCH_WAIT_MS / 1000  # a getmany waits two fetches
    assert busy.after(fetched=False, quiet_s=0.005, busy=busy, idle=idle) == busy
    assert busy.after(fetched=False, quiet_s=busy.getmany_s, busy=busy, idle=idle) == idle
    assert busy.after(fetched=False, quiet_s=30.0, busy=busy, idle=idle) == idle
    assert (idle.max_wait_ms, idle.min_bytes) == (100, 1)  # Kafka answers on arrival
    assert idle.after(fetched=False, quiet_s=0.0, busy=busy, idle=idle) == idle
    assert FetchPace.busy(100, 1).min_bytes == 1  # the embedded broker's
    assert FetchPace.busy(5, 4096).max_wait_ms == 5  # never above the setting


def test_the_embedded_broker_fetches_one_byte_at_a_time_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tansu answers a fetch at once when its bytes are there and otherwise holds it its
    whole wait, so ``wb run``'s embedded broker gets a busy min bytes of 1; Apache Kafka
    keeps 4 KB; an operator's ``WB_CONSUMER_BUSY_MIN_BYTES`` wins over both, and the app
    built from the settings fetches with it."""
    assert Settings(kafka_broker="kafka.example:9092").consumer_busy_min_bytes == 4096
    embedded = Settings().on_embedded_broker("127.0.0.1:39092")
    assert embedded.kafka_broker == "kafka://127.0.0.1:39092"
    assert embedded.consumer_busy_min_bytes == EMBEDDED_BUSY_MIN_BYTES == 1
    monkeypatch.setenv("WB_CONSUMER_BUSY_MIN_BYTES", "8192")
    chosen = Settings().on_embedded_broker("127.0.0.1:39092")
    assert chosen.consumer_busy_min_bytes == 8192
    app = faust_app(chosen)
    use_fetch_pace(app, 100, chosen.consumer_busy_min_bytes)
    assert app.wb_busy_min_bytes == 8192  # type: ignore[attr-defined]
