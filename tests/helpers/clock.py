"""A controllable clock: tests move time instead of sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    """A controllable clock: tests move time instead of sleeping."""

    now: datetime = T0
    step: timedelta = field(default=timedelta(0))

    def __call__(self) -> datetime:
        current = self.now
        self.now = self.now + self.step
        return current

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    async def database(self, session: object) -> datetime:
        """This clock standing in for the database's (``HighlightStore.budget_clock``), so
        a test moves the budget's time as it moves the rest."""
        return self.now
