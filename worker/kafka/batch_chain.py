"""Batches one after another, gathering what arrives meanwhile: the input sinks' pacing.

An asyncio primitive of the Kafka adapter (``worker.kafka.app`` makes one per input topic
and pauses partitions through its ``on_full``/``on_room``); the rules it feeds know nothing
of it, which is why it lives here rather than beside the batch values in the domain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


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
