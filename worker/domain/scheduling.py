"""The regeneration scheduler's pure rules: priorities, settling, the token bucket.

A stale mark no longer publishes a request at once: it *queues* one for its user (one per
user, like the pending request it becomes). A queued request is due ``settle`` after the
latest change it absorbed, but never later than ``max_wait`` after the first one
(comment-driven priorities only; the others are due at once). Due requests leave the
queue highest priority first, as far as a token bucket shared by every worker allows.
The SQL the scheduler runs (``worker.services.scheduler``) is tested against these.

``RegenPolicy`` holds the numbers (settle, max wait, budget). It is a plain value handed
to the service objects that mark rows stale (and carried by their outbox sinks), never
process-wide state: two runtimes in one process may run different policies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import IntEnum


class Priority(IntEnum):
    """Lower is more urgent; published as the request's ``priority``."""

    PRIVACY = 0  # a deleted comment: its quote may be displayed
    MISSING = 1  # a profile with no highlight at all
    COMMENT = 2  # new or edited comments (more unseen comments first)
    OPERATOR = 3  # an operator's regenerate / mark-stale / clear-override
    EXPIRED = 4  # past stale_after (oldest first)
    RESEED = 5  # a bulk reseed


# Priorities whose requests wait for the changes to settle: comments come in bursts.
SETTLING = frozenset({Priority.PRIVACY, Priority.MISSING, Priority.COMMENT})

_BY_REASON = {
    "comment_deleted": Priority.PRIVACY,
    "missing": Priority.MISSING,
    "new_comment": Priority.COMMENT,
    "comment_edited": Priority.COMMENT,
    "manual": Priority.OPERATOR,
    "expired": Priority.EXPIRED,
}


def priority_for(reason: str | None, trigger: str | None = None) -> Priority:
    """The priority of a request for ``reason`` (a reseed is marked ``manual`` too)."""
    if trigger == "reseed":
        return Priority.RESEED
    return _BY_REASON.get(reason or "", Priority.OPERATOR)


def due_at(
    priority: int,
    first_change: datetime,
    last_change: datetime,
    settle: timedelta,
    max_wait: timedelta,
) -> datetime:
    """When a queued request may go: ``settle`` after the latest change, capped at
    ``max_wait`` after the first change not yet requested; at once if it does not settle."""
    if priority not in SETTLING:
        return first_change
    return min(last_change + settle, first_change + max_wait)


def queue_order(priority: int, unseen: int, first_change: datetime) -> tuple[int, int, datetime]:
    """Sort key of due requests: priority, then more unseen comments, then oldest change."""
    return (priority, -unseen, first_change)


@dataclass(frozen=True, slots=True)
class RegenPolicy:
    """When queued requests are due and how many may go a minute (``WB_REGEN_*``)."""

    settle: timedelta = timedelta(0)
    max_wait: timedelta = timedelta(0)
    rate_per_min: float = 0.0  # 0: no budget
    burst: int = 0
    paused: bool = False  # an operator's pause is in force (``held``)
    # How long a batch-lane request may take (its ``respond_by``; ``worker.domain.cost``).
    batch_deadline: timedelta = timedelta(hours=24)
    # Once the UTC day's reported cost reaches it, only privacy requests go out (0: no cap).
    max_usd_per_day: float = 0.0
    # LLM tokens a minute (0: no token budget), and what a request is charged when neither
    # its user nor recent results reported usage (``worker.services.lane_budget``).
    tokens_per_min: float = 0.0
    tokens_estimate: int = 2000
    # The batch lane's own budget (``worker.domain.cost``): both 0, it draws from the one
    # budget above, after the interactive lane by priority.
    batch_rate_per_min: float = 0.0
    batch_tokens_per_min: float = 0.0

    @property
    def immediate(self) -> bool:
        """No settle time, no budget and no pause: a stale mark makes its request at once
        (the behaviour before the scheduler; no scheduler step is needed)."""
        budgets = (
            self.rate_per_min,
            self.tokens_per_min,
            self.batch_rate_per_min,
            self.batch_tokens_per_min,
        )
        return not self.paused and self.settle <= timedelta(0) and max(budgets) <= 0

    @property
    def batch_budget(self) -> bool:
        """Whether the batch lane has a budget of its own."""
        return self.batch_rate_per_min > 0 or self.batch_tokens_per_min > 0

    def held(self) -> RegenPolicy:
        """This policy while an operator pauses regeneration: never immediate, so a stale
        mark queues its request like any other policy's, due as this policy says, and the
        scheduler step releases it once the pause is over (a pause holds under every
        policy)."""
        return replace(self, paused=True)

    @property
    def burst_size(self) -> int:
        return max(1, self.burst or int(self.rate_per_min) or 1)


# The default of every service object: requests at once, as code that predates the
# scheduler (and the tests of it) expects.
IMMEDIATE = RegenPolicy()


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``tokens`` as of ``at``; ``rate`` tokens a minute up to ``burst``."""

    tokens: float
    at: datetime

    def refilled(
        self, now: datetime, rate_per_min: float, burst: int, unpublished: int = 0
    ) -> Bucket:
        """Tokens earned since ``at``, up to the burst less what is given out but not yet
        on the topic (``unpublished``): tokens and the outbox together never exceed the
        burst, so a backlog the relay publishes late (Kafka away, a worker killed before
        its relay ran) is never followed by a full bucket on top of it, and ordinary
        relay lag costs nothing (the cap only bites when the bucket is full).

        ``at`` never moves back: a ``now`` behind it (a step that read the clock before
        another step's later refill committed) earns nothing and leaves ``at`` where it
        is, so no interval is ever credited twice."""
        elapsed = max(0.0, (now - self.at).total_seconds())
        room = max(0.0, float(burst - unpublished))
        return Bucket(min(room, self.tokens + elapsed * rate_per_min / 60.0), max(self.at, now))

    def paused(self, now: datetime) -> Bucket:
        """The bucket while an operator pauses regeneration: it earns nothing meanwhile
        (a resume does not release a burst the pause saved up); ``at`` never moves back."""
        return Bucket(self.tokens, max(self.at, now))

    def available(self) -> int:
        return int(self.tokens + 1e-9)

    def take(self, n: int) -> Bucket:
        if n > self.available():
            raise ValueError(f"taking {n} tokens from {self.tokens:.3f}")
        return Bucket(self.tokens - n, self.at)

    def charged(self, amount: float, burst: int) -> Bucket:
        """An LLM-token bucket after a request's estimate: it may go below zero (a debt the
        refill repays), so one request larger than a minute's worth still goes, alone; but
        never below a minute's worth of debt, so one huge estimate (a user whose last
        generation reported millions of tokens) cannot hold a lane for hours."""
        return Bucket(max(-float(burst), self.tokens - amount), self.at)

    def settled(self, amount: float, burst: int) -> Bucket:
        """After results gave back (``amount`` > 0) or took (< 0) what their estimates
        missed by; within a minute's worth either side of zero, as ``charged``."""
        return Bucket(max(-float(burst), min(float(burst), self.tokens + amount)), self.at)
