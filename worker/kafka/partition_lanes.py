"""Batches of different partitions in flight at once: one ``BatchChain`` per lane.

A comment batch waits for PostgreSQL about twice as long as the worker computes it
(docs/performance.md, 2026-12-06: 14 ms of CPU and 30 ms in the database for 490
comments), so with one chain per topic the worker's core idles while its batch is in the
database, and the database's while the next batch is decoded. ``WB_INPUT_LANES`` chains
per topic overlap the two. A topic's partitions are dealt to the lanes by number
(``lane_of``), and each lane's batch runs in its own transaction on its own
pooled connection:

- order per partition holds: a partition always goes to the same lane, and a lane's
  batches never overlap (``BatchChain``);
- the input topics are keyed by what their batches lock (the comment's user, the
  mapping's request), so two lanes rarely want the same row; when they do (a comment named
  only by its request, a duplicate produced to two partitions), each statement locks in
  one order and the later batch waits, or PostgreSQL breaks a deadlock and the batch is
  retried as any transient fault is;
- acks are per partition, so a lane acks its partitions' offsets whatever the other does.

Which lane: the sum of the partition number's digits in base ``lanes``, modulo ``lanes``
(``lane_of``). It must not depend on the assignment (a partition that moved lanes at a
rebalance could have batches in two lanes at once), and plain ``partition % lanes`` left
most lanes idle in a group: round-robin assignors give a worker every workers-th
partition (4 workers on 16 partitions: worker k gets k, k+4, k+8, k+12, all one lane at
four lanes). The digit sum deals 0..lanes-1 to every lane as ``%`` does, and deals any such
stride that is a power of ``lanes`` across them all. With fewer partitions than lanes the
spare lanes get nothing; one lane is the old chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from worker.kafka.batch_chain import BatchChain


def lane_of(partition: int, lanes: int) -> int:
    """The lane of ``partition``: its digits in base ``lanes`` summed, modulo ``lanes``."""
    if lanes == 1:
        return 0
    total = 0
    while partition:
        partition, digit = divmod(partition, lanes)
        total += digit
    return total % lanes


class Partitioned(Protocol):
    @property
    def partition(self) -> int: ...


M = TypeVar("M", bound=Partitioned)


@dataclass
class PartitionLanes(Generic[M]):
    """A topic's sink: each fetch's messages split by ``lane_of`` their partition, every
    part to its lane's chain in the order it came (offset order per partition)."""

    lanes: list[BatchChain[M]]
    _lane: dict[int, int] = field(default_factory=dict)  # partition -> lane, computed once

    def add(self, messages: Sequence[M]) -> None:
        count = len(self.lanes)
        if count == 1:
            self.lanes[0].add(messages)
            return
        parts: dict[int, list[M]] = {}
        lane = self._lane
        for message in messages:
            partition = message.partition
            index = lane.get(partition)
            if index is None:
                index = lane[partition] = lane_of(partition, count)
            parts.setdefault(index, []).append(message)
        failure: BaseException | None = None
        for index, part in parts.items():
            try:  # every lane gets its part, even after another lane's batch failed
                self.lanes[index].add(part)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def cancel(self) -> None:
        for lane in self.lanes:
            lane.cancel()
