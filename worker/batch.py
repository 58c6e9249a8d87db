"""What a batch is made of and what it did: transport-neutral values shared by the
pipeline, the comment rules, the metrics and the Faust adapters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from worker.events import InputStream, RejectReason


@dataclass(frozen=True)
class RawMessage:
    """One consumed message, as any transport hands it over."""

    value: bytes | None
    topic: str
    partition: int
    offset: int


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
