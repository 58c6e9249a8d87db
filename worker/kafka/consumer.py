"""Faust's Kafka consumer with a configurable fetch wait.

Faust creates its group consumer with ``fetch_max_wait_ms=1500``. Apache Kafka answers a
fetch as soon as data arrives, but a broker that holds a fetch until its max wait (the
embedded Tansu does) adds up to that much latency to every event.
``WB_CONSUMER_FETCH_WAIT`` (100 ms) bounds it; an idle consumer then sends a few more empty
fetches, which are cheap.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts (it builds its Fetcher then).
        consumer._fetch_max_wait_ms = self.app.wb_fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def use_fetch_wait(app: faust.App, milliseconds: int) -> None:
    """Make ``app``'s group consumer wait at most ``milliseconds`` per fetch."""
    app.wb_fetch_max_wait_ms = milliseconds  # type: ignore[attr-defined]
    app.transport.Consumer = _Consumer  # type: ignore[misc]
