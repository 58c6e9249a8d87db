"""A topic's batches: one at a time under light load, up to ``WB_INPUT_LANES`` at once when a
backlog waits, never two with the same partition.

Why several at once: a comment batch waits for PostgreSQL about twice as long as the worker
computes it (docs/performance.md, 2026-12-06: 14 ms of CPU and 30 ms in the database for 490
comments), so with one batch in flight the worker's core idles while its batch is in the
database, and the database's while the next is decoded. Each batch runs in its own
transaction on its own pooled connection.

Why one at a time until a backlog waits: at a steady 2,000 comments/s the messages that
arrive while a batch is in the database are a few dozen, and splitting them over four
batches (as fixed lanes did, one per group of partitions) paid each batch's fixed cost
(three statements, a commit, the fetch's bookkeeping) four times over and made hot rows a
convoy. One batch in flight at a time, which grows with the load, keeps up until a whole
batch waits; only then does a further batch start beside the running ones (``spread_at``).
Measured on Apache Kafka at 2,000 comments/s (docs/performance.md, 2026-12-06 evening): the
stale mark's p50 / p99 went from 31 / 60 ms (four fixed lanes) to 17-21 / 41-55 ms, and with
two workers on the same 20 users from 38 / 85 to 19-22 / 46-52 ms; a backlog of 100,000
comments still runs four at once (0.97x the lean reference, as before).

Order per partition holds: a partition's messages wait in arrival (offset) order, a batch
takes them from the front, and a partition in a running batch is not taken again until that
batch ends. Acks are per message, after the batch's commit. Two batches rarely want the same
row (the input topics are keyed by what their batches lock); when they do, each statement
locks in one order and the later batch waits, or PostgreSQL breaks a deadlock and the batch
is retried as any transient fault is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, Protocol, TypeVar


class Partitioned(Protocol):
    @property
    def partition(self) -> int: ...


M = TypeVar("M", bound=Partitioned)


def _nothing(*_: object) -> None:
    return None


@dataclass
class PartitionLanes(Generic[M]):
    """A topic's sink: ``add`` takes each fetch's messages; ``apply`` gets batches of at most
    ``size``, at most ``lanes`` at once. A failed batch stops new batches and its error is
    raised to the next ``add``. Backpressure is the caller's: ``on_full`` is told of each
    addition while ``lanes`` batches' worth waits, ``on_room`` once less than that waits."""

    apply: Callable[[list[M]], Awaitable[None]]
    size: int
    lanes: int = 1
    on_full: Callable[[Sequence[M]], None] = _nothing
    on_room: Callable[[], None] = _nothing
    waiting: dict[int, list[M]] = field(default_factory=dict)  # partition -> in order
    waiting_count: int = 0
    busy: set[int] = field(default_factory=set)  # partitions in a running batch
    running: set[asyncio.Future[None]] = field(default_factory=set)
    failure: BaseException | None = None
    full: bool = False

    @property
    def spread_at(self) -> int:
        """Messages of free partitions that open a further batch while others run: a
        whole batch's worth, the point where one batch at a time no longer keeps up."""
        return self.size

    def add(self, messages: Sequence[M]) -> None:
        if self.failure is not None:
            raise self.failure
        for message in messages:
            self.waiting.setdefault(message.partition, []).append(message)
        self.waiting_count += len(messages)
        self._dispatch()
        if self.waiting_count >= self.size * self.lanes:
            self.full = True
            self.on_full(messages)

    def cancel(self) -> None:
        for batch in self.running:
            batch.cancel()

    def _free_waiting(self) -> int:
        return sum(len(queue) for p, queue in self.waiting.items() if p not in self.busy)

    def _dispatch(self) -> None:
        while self.failure is None and len(self.running) < self.lanes:
            free = self._free_waiting()
            if not free or (self.running and free < self.spread_at):
                break
            self._start()
        if self.full and self.waiting_count < self.size * self.lanes:
            self.full = False
            self.on_room()

    def _start(self) -> None:
        """A batch of the free partitions' messages, earliest-waiting partitions first."""
        batch: list[M] = []
        taken: set[int] = set()
        for partition in [p for p in self.waiting if p not in self.busy]:
            queue = self.waiting[partition]
            room = self.size - len(batch)
            batch += queue[:room]
            del queue[:room]
            taken.add(partition)
            if not queue:
                del self.waiting[partition]
            if len(batch) >= self.size:
                break
        self.waiting_count -= len(batch)
        self.busy |= taken
        running = asyncio.ensure_future(self.apply(batch))
        self.running.add(running)
        running.add_done_callback(partial(self._ended, taken))

    def _ended(self, taken: set[int], batch: asyncio.Future[None]) -> None:
        self.running.discard(batch)
        self.busy -= taken
        if batch.cancelled():
            return
        if (error := batch.exception()) is not None:
            self.failure = self.failure or error
            return
        self._dispatch()
