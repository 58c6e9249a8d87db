"""What regeneration costs: lanes, reported usage, and the spend it adds up to.

Generators are billed in tokens and dollars, and providers sell a cheaper tier for work
that may take hours (batch APIs, flex processing). So every request names its *lane*:

- ``interactive``: a deletion (privacy), a missing highlight, new or edited comments, an
  operator's request. Someone is waiting; it goes out on the request topic.
- ``batch``: an expiry, a reseed, a bulk regenerate. Nobody is waiting; it carries
  ``respond_by`` (``WB_REGEN_BATCH_DEADLINE`` after it was made) and, with
  ``WB_TOPIC_REGEN_REQUESTS_BATCH`` set, goes to its own topic, which a generator may route
  to a provider's batch API.

The lane follows the request's priority (``worker.domain.scheduling.Priority``): one rule,
so a privacy request can never be in the batch lane.

A result may report ``usage`` (tokens in and out, cost in US dollars). Its spend is booked
to the lane and reason of the request it answers (``UNREQUESTED`` when it answers none: a
late answer to a request since replaced, or a generator acting on its own), also when the
result is superseded or conflicts: the money was spent either way. A result refused to the
dead-letter topic counts nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from worker.domain.scheduling import Priority


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"


BATCH_PRIORITIES = frozenset({Priority.EXPIRED, Priority.RESEED})
# The reason spend is booked to when a result answers no pending request.
UNREQUESTED = "unrequested"
# A generation's reported usage may not exceed these (a larger figure is a bug upstream,
# and one such result would distort every sum and budget it enters).
MAX_TOKENS = 10_000_000
MAX_COST_USD = 1_000.0


def lane_for(priority: int) -> Lane:
    """The lane of a request of ``priority``: expiries and reseeds can wait, nothing else."""
    return Lane.BATCH if priority in BATCH_PRIORITIES else Lane.INTERACTIVE


@dataclass(frozen=True, slots=True)
class Usage:
    """One generation's reported usage; a figure the generator did not report is None."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


def reports_tokens(usage: Usage | None) -> bool:
    """Whether ``usage`` says how many tokens were used (a missing direction counts 0:
    generators should report both)."""
    return usage is not None and (usage.input_tokens is not None or usage.output_tokens is not None)


def tokens_of(usage: Usage) -> int:
    return (usage.input_tokens or 0) + (usage.output_tokens or 0)


@dataclass(slots=True)
class SpendTotals:
    """Results counted; how many reported tokens and how many a cost (each average is over
    its own count: a generator reporting only a cost must not make tokens look free); and
    what they reported."""

    results: int = 0
    token_reports: int = 0
    cost_reports: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, usage: Usage | None) -> None:
        self.results += 1
        if usage is None:
            return
        if reports_tokens(usage):
            self.token_reports += 1
            self.input_tokens += usage.input_tokens or 0
            self.output_tokens += usage.output_tokens or 0
        if usage.cost_usd is not None:
            self.cost_reports += 1
            self.cost_usd += usage.cost_usd

    def merge(self, other: SpendTotals) -> None:
        self.results += other.results
        self.token_reports += other.token_reports
        self.cost_reports += other.cost_reports
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd

    @property
    def average_cost_usd(self) -> float | None:
        """The mean cost of a result that reported one (None before any did)."""
        return self.cost_usd / self.cost_reports if self.cost_reports else None

    @property
    def average_tokens(self) -> float | None:
        """The mean tokens of a result that reported them (None before any did)."""
        total = self.input_tokens + self.output_tokens
        return total / self.token_reports if self.token_reports else None


SpendKey = tuple[str, str]  # (lane, reason)


@dataclass
class Spend:
    """A batch's (or a period's) spend by lane and reason."""

    by_key: dict[SpendKey, SpendTotals] = field(default_factory=lambda: defaultdict(SpendTotals))

    def book(self, lane: str, reason: str, usage: Usage | None) -> None:
        self.by_key[(lane, reason)].add(usage)

    def merge(self, other: Spend) -> None:
        for key, totals in other.by_key.items():
            self.by_key[key].merge(totals)

    def total(self) -> SpendTotals:
        whole = SpendTotals()
        for totals in self.by_key.values():
            whole.merge(totals)
        return whole

    def __bool__(self) -> bool:
        return bool(self.by_key)
