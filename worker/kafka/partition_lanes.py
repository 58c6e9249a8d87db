"""Batches of different partitions in flight at once: one ``BatchChain`` per lane.

A comment batch waits for PostgreSQL about twice as long as the worker computes it
(docs/performance.md, 2026-12-06: 14 ms of CPU and 30 ms in the database for 490
comments), so with one chain per topic the worker's core idles while its batch is in the
database, and the database's while the next batch is decoded. ``WB_INPUT_LANES`` chains
per topic overlap the two. A topic's partitions are dealt to the lanes by number
(``partition % lanes``), and each lane's batch runs in its own transaction on its own
pooled connection:

- order per partition holds: a partition always goes to the same lane, and a lane's
  batches never overlap (``BatchChain``);
- the input topics are keyed by what their batches lock (the comment's user, the
  mapping's request), so two lanes rarely want the same row; when they do (a comment named
  only by its request, a duplicate produced to two partitions), each statement locks in
  one order and the later batch waits, or PostgreSQL breaks a deadlock and the batch is
  retried as any transient fault is;
- acks are per partition, so a lane acks its partitions' offsets whatever the other does.

With fewer partitions than lanes the spare lanes get nothing; one lane is the old chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from worker.kafka.batch_chain import BatchChain


class Partitioned(Protocol):
    @property
    def partition(self) -> int: ...


M = TypeVar("M", bound=Partitioned)


@dataclass
class PartitionLanes(Generic[M]):
    """A topic's sink: each fetch's messages split by ``partition % len(lanes)``, every
    part to its lane's chain in the order it came (offset order per partition)."""

    lanes: list[BatchChain[M]]

    def add(self, messages: Sequence[M]) -> None:
        count = len(self.lanes)
        if count == 1:
            self.lanes[0].add(messages)
            return
        parts: dict[int, list[M]] = {}
        for message in messages:
            parts.setdefault(message.partition % count, []).append(message)
        for index, part in parts.items():
            self.lanes[index].add(part)

    def cancel(self) -> None:
        for lane in self.lanes:
            lane.cancel()
