"""An ``apply`` for ``PartitionLanes`` tests that records its batches and can be held open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class Recorder:
    """An ``apply`` that records its batches and can be held open by the test."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.active = 0
        self.overlapped = False
        self.changed = asyncio.Condition()

    async def __call__(self, batch: list[Any]) -> None:
        self.active += 1
        self.overlapped |= self.active > 1
        await self._changed()
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
            self.batches.append(batch)
        finally:
            self.active -= 1
        await self._changed()

    async def _changed(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, items: int) -> None:
        """Until ``items`` items were applied (fails after 5 s if the sink stalls)."""
        await self._wait_for(lambda: sum(map(len, self.batches)) >= items)

    async def until_held(self) -> None:
        """Until a batch is inside ``apply``, held at the closed gate (fails after 5 s)."""
        await self._wait_for(lambda: self.active > 0)

    async def _wait_for(self, condition: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(condition), timeout=5)
