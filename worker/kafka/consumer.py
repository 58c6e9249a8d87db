"""Faust's Kafka consumer with a configurable fetch wait and whole fetches for the worker.

Fetch wait: Faust creates its group consumer with ``fetch_max_wait_ms=1500``. Apache Kafka
answers a fetch as soon as its min bytes (1 when idle) have come, but a broker that holds a
fetch until its max wait (the embedded Tansu does) adds up to that much latency to every
event. ``WB_CONSUMER_FETCH_WAIT`` (100 ms) bounds it; an idle consumer then sends a few more
empty fetches, which are cheap.

While messages flow the consumer fetches at a busier pace (``FetchPace``): each fetch waits
at most ``BUSY_FETCH_WAIT_MS`` and until ``WB_CONSUMER_BUSY_MIN_BYTES`` have come (4 KB on
Apache Kafka; 1 byte on ``wb run``'s embedded broker, ``settings.EMBEDDED_BUSY_MIN_BYTES``:
Tansu does not answer a fetch when its bytes arrive but at its max wait, so 4 KB, which it
rarely holds when the fetch comes, made every fetch wait). The fetch loop takes each fetch's
messages at once, so its next fetch found little or nothing new: Tansu held it its whole max
wait while comments arrived, and Kafka answered each producer batch with a fetch of its own,
about 300 a second at 2,000 comments/s, each costing the consumer thread's Python more than
the messages in it. At that rate the stale mark's p50 / p99 went from 38 / 99 to 21 / 45-58
ms on Tansu and the worker's CPU per comment from about 360 to 230 us on Kafka
(docs/performance.md, 2026-12-06 night). The price: between about 100 and 1,500 comments/s
4 KB take longer than 10 ms to come, so a comment may wait up to 10 ms more at the broker
(fetches then come every 10 ms). Two busy waits without a message put the idle pace back.
Only the topics whose whole fetches the worker takes (its inputs) count as messages flowing.

Whole fetches: Faust hands every message to its streams one at a time. Per message its
fetch loop awaits a ``wait_first`` (two tasks), the conductor decodes an event and queues
it, and the stream takes it out again, sets it as the current event, tracks and acks it:
about 150 us of CPU per message on the bench machine, where aiokafka's own ``getmany``
costs about 4 (docs/performance.md). The worker's inputs only ever want batches of raw
bytes, so for the topics registered with :func:`deliver_whole_fetches` the fetch loop
hands each fetch's messages to the topic's sink in one call, in offset order per
partition. Everything else stays Faust's: the group and its rebalances, flow control, and
the commit of offsets acked on the consumer (the sink acks after its database commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TopicT

BUSY_FETCH_WAIT_MS = 10  # while messages flow (never above WB_CONSUMER_FETCH_WAIT)


@dataclass(frozen=True)
class FetchPace:
    """How the consumer fetches: the broker's max wait and min bytes for each fetch, and
    how long a ``getmany`` waits for messages."""

    max_wait_ms: int
    min_bytes: int
    getmany_s: float

    @classmethod
    def idle(cls, wait_ms: int) -> FetchPace:
        """Nothing flows: Kafka answers on arrival, Tansu within ``wait_ms``."""
        return cls(wait_ms, 1, 1.0)

    @classmethod
    def busy(cls, wait_ms: int, min_bytes: int) -> FetchPace:
        """Messages flow: fewer, fuller fetches, each held at most ``BUSY_FETCH_WAIT_MS``
        for ``min_bytes`` (``WB_CONSUMER_BUSY_MIN_BYTES``)."""
        busy_ms = min(BUSY_FETCH_WAIT_MS, wait_ms)
        return cls(busy_ms, min_bytes, 2 * busy_ms / 1000)

    def after(self, fetched: bool, quiet_s: float, busy: FetchPace, idle: FetchPace) -> FetchPace:
        """The pace after a turn of the fetch loop: ``busy`` when it brought messages,
        ``idle`` once none came for two busy waits (``quiet_s`` since the last), else as it
        was. By time, not by an empty ``getmany``: with partitions paused the loop takes
        without waiting, or not at all, and a long pause (the database away, the lanes
        full) must not keep the others' fetches at the busy pace."""
        if fetched:
            return busy
        return idle if quiet_s >= busy.getmany_s else self


# Takes a fetch's messages of one topic without waiting: backpressure is the sink's (it
# leaves its partitions out of fetches while it is behind), never the fetch loop's.
Sink = Callable[[list[Message]], None]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts (it builds its Fetcher then).
        consumer._fetch_max_wait_ms = self.app.wb_fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _room(self) -> asyncio.Event:
        """Set when a partition a sink paused is resumed (``on_buffer_drop``)."""
        room: asyncio.Event | None = self.__dict__.get("_wb_room")
        if room is None:
            room = self.__dict__["_wb_room"] = asyncio.Event()
        return room

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        self._room.set()

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Faust makes every assigned partition active again but keeps the set of those a
        sink paused, so a partition revoked while paused stayed in it for good (the sink
        only resumes partitions still assigned), and the fetch loop behaved as if paused
        ever after. An assignment starts with none paused, as Faust's active set does."""
        self._buffered_partitions.clear()
        await super().on_partitions_assigned(assigned, generation_id)

    async def _until_room(self, seconds: float) -> None:
        """Wait until a partition a sink paused resumes, at most ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._room.wait()

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``), one sink call per topic and
        fetch instead of one conductor call per message.

        While a sink holds partitions paused (a batch's worth waits), the loop must come
        back as soon as one resumes. Faust's waits a second in ``getmany`` for the other
        partitions' data (or sleeps a second when none is active): a burst of whole
        fetches paused every partition of a topic at once, its batches were done in a
        fraction of that second, and the worker idled for the rest, capping a stream near
        15,000 events/s however fast its batches went (docs/performance.md). Then it takes
        what the other partitions have without waiting, and waits for a resume instead, at
        most the fetch wait (``WB_CONSUMER_FETCH_WAIT``) so the others are not held."""
        sinks: dict[str, Sink] = getattr(self.app, "wb_batch_sinks", {})
        stopped_errors: tuple[type[BaseException], ...] = self.consumer_stopped_errors
        wait_ms: int = getattr(self.app, "wb_fetch_max_wait_ms", 100)
        idle = FetchPace.idle(wait_ms)
        busy = FetchPace.busy(wait_ms, self.app.wb_busy_min_bytes)  # type: ignore[attr-defined]
        pace, last_fetched = idle, time.monotonic()
        # Never a zero wait: with a partition paused the loop would spin.
        fetch_wait = max(wait_ms / 1000, 0.01)
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                await self.sleep(0)
                if self.should_stop:
                    continue
                self._room.clear()  # before the fetch: a resume during it is not missed
                paused = bool(self._buffered_partitions)
                fetched: dict[str, list[Message]] = {}
                if not paused or self._get_active_partitions():
                    fetched = await self._fetch_once(sinks, 0.0 if paused else pace.getmany_s)
                if fetched:
                    last_fetched = time.monotonic()
                quiet_s = time.monotonic() - last_fetched
                pace = self._paced(pace, pace.after(bool(fetched), quiet_s, busy, idle))
                for topic, messages in fetched.items():
                    sinks[topic](messages)
                if paused and not fetched:
                    await self._until_room(fetch_wait)
        except (asyncio.CancelledError, *stopped_errors):  # type: ignore[misc]
            if self.transport.app.should_stop:
                return  # stopping: the unacked messages are delivered again
            raise

    def _paced(self, current: FetchPace, pace: FetchPace) -> FetchPace:
        """Make aiokafka's fetcher send its next fetches at ``pace``. Its thread reads both
        values for each request it builds, so they change in the order that never makes
        a long wait for many bytes in between: the min bytes first when they fall, the
        wait first when it falls (each int is seen whole)."""
        fetcher = getattr(getattr(self._thread, "_consumer", None), "_fetcher", None)
        if fetcher is None:
            return current  # not started yet: set it once it is
        if pace.min_bytes < fetcher._fetch_min_bytes:
            fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = pace.min_bytes, pace.max_wait_ms
        else:
            fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes = pace.max_wait_ms, pace.min_bytes
        return pace

    async def _fetch_once(self, sinks: dict[str, Sink], wait_s: float) -> dict[str, list[Message]]:
        """One ``getmany`` (waiting at most ``wait_s`` for data) with Faust's bookkeeping
        per message (read offsets, gaps, the commit interval); other topics' messages go
        Faust's way."""
        fetched: dict[str, list[Message]] = {}
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        partitions: set[TP] = set()
        async for tp, message in self.getmany(timeout=wait_s):
            offset, seen = message.offset, read_offsets[tp]
            if seen is not None and offset < seen:
                continue  # fetched again after a seek: Faust drops these too
            if seen and offset - seen > 1 and acks_enabled_for(message.topic):
                await self._add_gap(tp, seen + 1, offset)  # compacted or transaction markers
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            if tp.topic in sinks:
                fetched.setdefault(tp.topic, []).append(message)
                partitions.add(tp)
            else:
                await self.wait_first(self.callback(message), self.suspend_flow.wait())
            read_offsets[tp] = offset
        note_progress(self.app.monitor, partitions)
        return fetched


def note_progress(monitor: Any, partitions: set[TP]) -> None:
    """What a Faust stream records when it takes an event: Faust's stalled-stream check
    reads it, and warns "Stream has not started processing" for a partition without it."""
    inbound = getattr(monitor, "stream_inbound_time", None)
    if inbound is not None:
        now = time.monotonic()
        for tp in partitions:
            inbound[tp] = now


def use_fetch_pace(app: faust.App, milliseconds: int, busy_min_bytes: int) -> None:
    """Make ``app``'s group consumer wait at most ``milliseconds`` per fetch, and while
    messages flow at most ``BUSY_FETCH_WAIT_MS`` for ``busy_min_bytes``."""
    app.wb_fetch_max_wait_ms = milliseconds  # type: ignore[attr-defined]
    app.wb_busy_min_bytes = busy_min_bytes  # type: ignore[attr-defined]
    app.transport.Consumer = _Consumer  # type: ignore[misc]


def deliver_whole_fetches(app: faust.App, topic: TopicT, sink: Sink) -> None:
    """Subscribe ``app`` to ``topic`` and hand each fetch's messages of it to ``sink``.

    The sink owns the messages: it tracks them on the consumer while it works on them
    (so a rebalance waits for them) and acks each once it is done; messages it drops
    unacked are fetched again from the committed offset."""
    app.topics.add(topic)
    sinks: dict[str, Sink] = app.__dict__.setdefault("wb_batch_sinks", {})
    sinks[topic.get_topic_name()] = sink
