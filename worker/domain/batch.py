"""What a batch is made of and what it did: transport-neutral values shared by the
pipeline, the comment rules, the metrics and the Faust adapters (whose pacing of batches,
``PartitionLanes``, lives with them in ``worker.kafka.partition_lanes``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from worker.domain.cost import Spend
from worker.domain.decoder import RejectReason
from worker.domain.wire import InputStream


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
    # Timestamps clamped to the receipt time, per (stream, field) (``domain.clock_skew``).
    clamped: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Results' reported usage by lane and reason (``worker.domain.cost``), for the counters.
    spend: Spend = field(default_factory=Spend)
    # (lane, estimate - actual LLM tokens) of the requests results answered with usage.
    token_settlements: list[tuple[str, float]] = field(default_factory=list)
    retries: int = 0
    # Its stale marks' requests went to the outbox (an immediate policy in force), not to
    # the scheduler's queue: the relay has something to publish at once.
    outboxed: bool = False

    def count(self, stream: InputStream, outcome: str) -> None:
        self.outcomes[(stream.value, outcome)] += 1

    def merge(self, other: BatchResult) -> None:
        self.outcomes.update(other.outcomes)
        self.dead_letters.extend(other.dead_letters)
        self.regen_requests.update(other.regen_requests)
        self.stale_event_times.extend(other.stale_event_times)
        self.turnaround_s.extend(other.turnaround_s)
        self.clamped.update(other.clamped)
        self.spend.merge(other.spend)
        self.token_settlements.extend(other.token_settlements)
        self.retries += other.retries
        self.outboxed = self.outboxed or other.outboxed
