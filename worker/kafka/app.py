"""The Faust app: thin adapters from Kafka topics to the ``Runtime``.

Every input topic's messages arrive a whole fetch at a time (``worker.kafka.consumer``)
and are acked only after the database transaction committed and any dead letters were
delivered, so the offsets Faust commits never run ahead of the database (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.types import TP, Message

from worker.domain.batch import DeadLetter, RawMessage
from worker.domain.wire import InputStream
from worker.kafka.connection import KafkaConnection
from worker.kafka.consumer import deliver_whole_fetches, use_fetch_pace
from worker.kafka.dead_letters import dead_letter_record, dead_letter_topic
from worker.kafka.partition_lanes import PartitionLanes
from worker.kafka.publisher import Outgoing, produce
from worker.runtime.process import RELAY, Runtime
from worker.services.outbox import REGEN_BATCH_STREAM, REGEN_STREAM, OutboxMessage
from worker.settings import Settings
from worker.web.public import register_views
from worker.web.responses import guard

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
PRODUCER_RETRY_MAX_S = 5.0
GC_YOUNG_THRESHOLD = 20_000  # Python's default is 700 allocations


class QuietMonitor(Monitor):
    """Faust's built-in monitor without its bookkeeping per message: counters that feed
    Faust's own stats page, which this worker does not serve (``worker.runtime.metrics``
    is what operators scrape); a batch tracks each of its messages on the consumer, which
    calls this. The one value Faust's stalled-stream check reads (when a partition last
    delivered) is kept by the consumer (``worker.kafka.consumer.note_progress``)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None


class TablelessApp(faust.App):
    """A Faust app that keeps no table on disk (``store="memory://"``), so its first start
    does not create ``<app id>-data/v1/tables`` in the working directory: only RocksDB
    tables read that directory, and a run of the test suite, each worker under its own
    app id, left hundreds of empty ones in the checkout."""

    async def on_first_start(self) -> None:
        return None


def faust_app(settings: Settings) -> faust.App:
    if settings.kafka_broker is None:
        raise ValueError("no broker configured (WB_KAFKA_BROKER); `wb run` starts one")
    return TablelessApp(
        settings.app_id,
        broker=settings.kafka_broker,
        broker_credentials=KafkaConnection.from_settings(settings).faust_credentials(),
        store="memory://",
        autodiscover=False,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_rebalance_timeout=settings.broker_session_timeout,
        producer_acks=-1,
        # Dead letters carry the original bytes: leave room for the largest input message.
        producer_max_request_size=2 * 1024 * 1024,
        web_application_options={"middlewares": [guard], "client_max_size": 1024 * 1024},
        # Faust's own pages (router, tables, statistics, graph) are not ours to serve.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        monitor=QuietMonitor(),
    )


def _aiokafka_producer(app: faust.App) -> Any:
    """The aiokafka producer inside Faust's (started with the app; raises until then)."""
    return cast(Any, app.producer)._ensure_producer()


async def _send_until_delivered(app: faust.App, messages: list[Outgoing]) -> None:
    """Produce and wait for every ack; on broker trouble wait and send all again
    (duplicates are allowed: consumers deduplicate by event id). Uses the app's own
    aiokafka producer (its connection and settings), in record batches."""
    delay = 0.2
    while True:
        try:
            await produce(_aiokafka_producer(app), messages)
            return
        except Exception as exc:
            log.warning(
                "producing %d messages failed (%s); retrying in %.1fs", len(messages), exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, PRODUCER_RETRY_MAX_S)


async def _send_dead_letters(app: faust.App, letters: Sequence[DeadLetter]) -> None:
    """Each letter to its source topic's dead-letter topic, under its original key."""
    await _send_until_delivered(app, [dead_letter_record(d) for d in letters])


async def _declare(app: faust.App, topics: Sequence[Any]) -> bool:
    """Create the output topics, retrying while the broker is away; False if the app
    began stopping first (a shutdown during start-up is not a crash)."""
    delay = 0.2
    while not app.should_stop:
        try:
            for topic in topics:
                await topic.maybe_declare()
            return True
        except Exception as exc:
            if app.should_stop:
                break
            log.warning("declaring output topics failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PRODUCER_RETRY_MAX_S)
    return False


def arm_shutdown_deadline(seconds: float) -> None:
    """Exit hard if shutdown takes longer than ``seconds``.

    With the broker unreachable, aiokafka's consumer can retry forever while stopping, and a
    deploy would hang until SIGKILL. Exiting is as safe as a crash: offsets only ever
    follow database commits.
    """

    def expire() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"wb: shutdown did not finish in {seconds:.0f}s; exiting hard\n")
        sys.stderr.flush()
        os._exit(70)

    threading.Thread(target=expire, name="shutdown-deadline", daemon=True).start()


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the long-lived start-up objects.

    After start-up the heap holds hundreds of thousands of long-lived objects (Faust,
    SQLAlchemy, pydantic); every full collection walked all of them, and a batch allocates
    enough to trigger collections often: a measurable share of the worker's CPU per event.
    Freezing moves them out of the collector's view; a larger first generation makes young
    collections rarer. Cycles among new objects are still collected.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


class Worker(faust.Worker):
    """Faust's worker, with a deadline on shutdown once a signal asks for it and the
    garbage collector settled once start-up is over."""

    def __init__(self, app: faust.App, shutdown_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        # Faust's terminal spinner: at a log level of warning or above it sets the root
        # logger to DEBUG (so that every record spins it), and then every debug call of
        # aiokafka's fetcher, several per fetch, built a record that the handler dropped:
        # 4 % of the worker's CPU at 2,000 comments/s. A worker has no one watching a spinner.
        self.spinner = None
        self.shutdown_timeout = shutdown_timeout
        self.deadline_armed = False

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        settle_garbage_collector()

    def _arm(self) -> None:
        if not self.deadline_armed:
            self.deadline_armed = True
            arm_shutdown_deadline(self.shutdown_timeout)

    def _on_sigterm(self) -> None:
        self._arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm()
        super()._on_sigint()


def _current(app: faust.App, messages: list[Message]) -> list[Message]:
    """The messages still this worker's: none while a rebalance holds the flow, none of an
    earlier assignment (Faust's streams skip the same; they are fetched again from the
    committed offsets)."""
    if not app.flow_control.is_active():
        return []
    generation = app.consumer_generation_id
    return [m for m in messages if m.generation_id == generation]


def _input_sink(app: faust.App, rt: Runtime, kind: InputStream) -> PartitionLanes[Message]:
    """An input topic's sink: whole fetches in, batches to the database (one at a time
    under light load, up to ``WB_INPUT_LANES`` at once with a backlog, never two of one
    partition: ``PartitionLanes``), acks after the commit.

    Backpressure per partition, as Faust's stream buffers do: while the lanes' worth of
    batches waits, the partitions it came from are left out of the next fetches, so a slow
    stream never holds up the others' fetches."""
    paused: set[TP] = set()

    def pause(messages: Sequence[Message]) -> None:
        # Faust's partition sets hold its own TPs (a message's tp may be aiokafka's).
        for tp in {TP(m.topic, m.partition) for m in messages} - paused:
            paused.add(tp)
            app.consumer.on_buffer_full(tp)

    def resume() -> None:
        assigned = app.consumer.assignment()
        for tp in paused:
            if tp in assigned:
                app.consumer.on_buffer_drop(tp)
        paused.clear()

    async def apply(messages: list[Message]) -> None:
        try:
            await _apply_and_ack(app, rt, kind, _current(app, messages))
        except Exception:
            # Not a transient fault (those are waited out) nor a poisonous event (dead-
            # lettered alone): a bug. Stop, as a crash would: nothing of it was acked.
            log.exception("a %s batch failed; stopping the worker", kind.value)
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    settings = rt.settings
    return PartitionLanes(apply, settings.batch_size, settings.lanes_per_input, pause, resume)


async def _apply_and_ack(
    app: faust.App, rt: Runtime, kind: InputStream, messages: list[Message]
) -> None:
    if not messages:
        return
    consumer = app.consumer
    for message in messages:
        consumer.track_message(message)  # a rebalance now waits for this batch
    result = await rt.handle(
        kind, [RawMessage(m.value, m.topic, m.partition, m.offset, m.key) for m in messages]
    )
    if result.dead_letters:
        await _send_dead_letters(app, result.dead_letters)
    for message in messages:
        consumer.ack(message)


def _input_topics(app: faust.App, rt: Runtime) -> list[Any]:
    """The three input topics, each delivered whole fetches at a time to its sink; returns
    their dead-letter topics."""
    settings = rt.settings
    topics = {
        InputStream.COMMENTS: app.topic(settings.topic_comments, **RAW),
        InputStream.REQUESTS: app.topic(settings.topic_requests, **RAW),
        InputStream.GENERATED: app.topic(settings.topic_generated, **RAW),
    }
    sinks = []
    for kind, topic in topics.items():
        sink = _input_sink(app, rt, kind)
        deliver_whole_fetches(app, topic, sink.add)
        sinks.append(sink)

    @app.task
    async def input_batches() -> None:
        try:
            await asyncio.Future()  # until the app stops and cancels its tasks
        finally:
            for sink in sinks:
                sink.cancel()  # a batch still in the database: rolled back, never acked

    return [app.topic(dead_letter_topic(t.get_topic_name()), **RAW) for t in topics.values()]


def worker_topics(settings: Settings) -> list[str]:
    """Every topic the worker reads or writes: inputs, their dead letters, requests."""
    inputs = [settings.topic_comments, settings.topic_requests, settings.topic_generated]
    return [*inputs, *(dead_letter_topic(t) for t in inputs), *request_topics(settings)]


def request_topics(settings: Settings) -> list[str]:
    """The request topics: one, or two with the batch lane on its own."""
    batch = settings.topic_regen_requests_batch
    return [settings.topic_regen_requests, *([batch] if batch else [])]


def stream_topics(settings: Settings) -> dict[str, str]:
    """The topic of each outbox stream: the batch lane's is the one request topic unless
    ``WB_TOPIC_REGEN_REQUESTS_BATCH`` names its own."""
    requests = settings.topic_regen_requests
    return {
        REGEN_STREAM: requests,
        REGEN_BATCH_STREAM: settings.topic_regen_requests_batch or requests,
    }


def _relay(app: faust.App, rt: Runtime, outputs: list[Any]) -> None:
    """The outbox relay: declares the output topics, then publishes queued requests,
    woken by a commit that queued some or every ``WB_RELAY_INTERVAL``."""
    settings = rt.settings
    topics = stream_topics(settings)

    async def publish(messages: Sequence[OutboxMessage]) -> None:
        outgoing = [
            Outgoing(topics.get(m.stream, m.stream), m.key.encode(), m.value.encode())
            for m in messages
        ]
        await _send_until_delivered(app, outgoing)

    @app.task
    async def relay() -> None:
        if not await _declare(app, outputs):
            return  # stopping before the topics were declared
        interval = settings.relay_interval.total_seconds()
        while not app.should_stop:
            # Cleared before the take, not after: a step that commits while the relay takes
            # (and finds nothing yet) must wake it again, or its requests wait an interval
            # and reach the broker in one lump with the next steps' (over the budget there).
            rt.relay_wakeup.clear()
            sent = await rt.retry_transient(RELAY, lambda: rt.relay_once(publish))
            if rt.relay_again(sent):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.relay_wakeup.wait(), timeout=interval)


def _timers(app: faust.App, rt: Runtime) -> None:
    """The sweep (leader only) and the scheduler (every worker)."""
    settings = rt.settings

    @app.task
    async def regen_scheduler() -> None:
        # Also with the immediate policy: this worker queues nothing, but a CLI or another
        # worker configured with a scheduler may have; their requests must not wait forever.
        tick = settings.regen_tick.total_seconds()
        while not app.should_stop:
            try:
                await rt.retry_transient("scheduler", rt.schedule_once)
            except Exception as exc:  # a bug must not stop the loop: log and go on
                log.exception("scheduler step failed: %s", exc)
            await asyncio.sleep(tick)

    @app.timer(settings.sweep_interval.total_seconds(), on_leader=True)
    async def sweep() -> None:
        # Start and end are logged so that "one sweeper at a time" can be checked from logs.
        log.info("sweep started")
        totals = await rt.sweep()
        log.info("sweep finished: %s", totals.as_dict())
        if expired := await rt.expire_parked(lambda letters: _send_dead_letters(app, letters)):
            log.warning("%d parked comments dead-lettered (request never mapped)", expired)


def _gauges(app: faust.App, rt: Runtime) -> None:
    """The database-backed gauges (the table-wide ones by the leader) and readiness on
    assignment."""

    async def refresh_gauges() -> None:
        try:  # every worker: its dead-letter counts; the leader also reads the table's
            await rt.refresh_gauges(leader=app.is_leader())
        except Exception as exc:
            log.warning("gauge refresh failed: %s", exc)

    @app.timer(rt.settings.gauge_interval.total_seconds())
    async def gauges() -> None:
        await refresh_gauges()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(_app: Any, assigned: Any, **_kw: Any) -> None:
        rt.assigned = True
        if app.is_leader():
            # A new leader's table-wide gauges at once, not an interval later: none are
            # exported until it reads them. Its first reading also prepares the statements,
            # which cost 70-100 slow comments when that came mid-stream (a timer's).
            app.add_future(refresh_gauges())


def create_app(settings: Settings, runtime: Runtime | None = None) -> faust.App:
    """Build the worker: the input topics' sinks, the outbox relay, the sweep and the views."""
    app = faust_app(settings)
    wait_ms = int(settings.consumer_fetch_wait.total_seconds() * 1000)
    use_fetch_pace(app, wait_ms, settings.consumer_busy_min_bytes)
    rt = runtime or Runtime(settings)
    dead_letter_topics = _input_topics(app, rt)
    outputs = [app.topic(t, **RAW) for t in request_topics(settings)]
    _relay(app, rt, [*outputs, *dead_letter_topics])
    _timers(app, rt)
    _gauges(app, rt)
    register_views(app, rt)
    return app
