"""What a batch is made of and what it did: transport-neutral values shared by the
pipeline, the comment rules, the metrics and the Faust adapters."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

from worker.domain.decoder import RejectReason
from worker.domain.wire import InputStream

T = TypeVar("T")


class RawMessage(NamedTuple):
    """One consumed message, as any transport hands it over (a tuple: every event makes
    one, and a frozen dataclass costs several times more to build)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None  # kept for the dead letter: a replay lands on the same partition


@dataclass(frozen=True)
class DeadLetter:
    message: RawMessage
    reason: RejectReason
    detail: str


@dataclass
class BatchResult:
    """What a batch did: outcome counts per (stream, outcome), dead letters, timings."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    regen_requests: Counter[str] = field(default_factory=Counter)
    stale_event_times: list[datetime] = field(default_factory=list)
    turnaround_s: list[float] = field(default_factory=list)
    retries: int = 0

    def count(self, stream: InputStream, outcome: str) -> None:
        self.outcomes[(stream.value, outcome)] += 1

    def merge(self, other: BatchResult) -> None:
        self.outcomes.update(other.outcomes)
        self.dead_letters.extend(other.dead_letters)
        self.regen_requests.update(other.regen_requests)
        self.stale_event_times.extend(other.stale_event_times)
        self.turnaround_s.extend(other.turnaround_s)
        self.retries += other.retries


def _nothing(*_: object) -> None:
    return None


@dataclass
class BatchChain(Generic[T]):
    """Applies batches one after another, gathering what arrives meanwhile into the next.

    While one batch is in the database, items that arrive are gathered (up to ``size`` per
    batch) and go as soon as it commits, even if nothing more arrives. Light load gets
    small batches at once; a burst gets large ones, so the fixed cost of a batch (its
    statements and commit) is paid less often. Batches never overlap, so order per
    partition holds; a failed batch stops the chain and its error is raised to the next
    ``add``. Backpressure is the caller's: ``on_full`` is told of each addition while a
    whole batch's worth waits, ``on_room`` once less than that waits again.
    """

    apply: Callable[[list[T]], Awaitable[None]]
    size: int
    on_full: Callable[[Sequence[T]], None] = _nothing
    on_room: Callable[[], None] = _nothing
    gathered: list[T] = field(default_factory=list)
    running: asyncio.Future[None] | None = None
    full: bool = False

    def add(self, items: Sequence[T]) -> None:
        self.gathered.extend(items)
        if self.running is None or self.running.done():
            self._raise_failure()
            self._start()
        if len(self.gathered) >= self.size:
            self.full = True
            self.on_full(items)

    def cancel(self) -> None:
        if self.running is not None:
            self.running.cancel()

    def _start(self) -> None:
        if not self.gathered:
            return
        batch, self.gathered = self.gathered[: self.size], self.gathered[self.size :]
        if self.full and len(self.gathered) < self.size:
            self.full = False
            self.on_room()
        self.running = asyncio.ensure_future(self.apply(batch))
        self.running.add_done_callback(self._next)

    def _next(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._start()

    def _raise_failure(self) -> None:
        if self.running is not None and self.running.done():
            self.running.result()
