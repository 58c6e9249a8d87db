"""Waiting out a database outage: the one rule for which failures are retried, and how.

The pipeline retries a batch and the runtime its periodic work (relay, sweep, scheduler,
parked expiry) through this one loop, so an error the one waits out is never one the other
gives up on, and both back off alike. What a caller records while it waits (metrics,
readiness, its log line) stays with the caller, as the ``on_outage`` callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.storage.database import database_answers, is_transient, needs_new_connection

T = TypeVar("T")
FIRST_DELAY_S = 0.1  # then doubling, up to the caller's ``max_backoff_s``


async def is_outage(sessions: async_sessionmaker[AsyncSession], exc: Exception) -> bool:
    """An error of an outage class, or any error while the database does not answer at all:
    an outage must never count as bad work, however it surfaces (a server refusing new
    connections raises codes that are not outages elsewhere)."""
    return is_transient(exc) or not await database_answers(sessions)


async def retry_through_outage(
    sessions: async_sessionmaker[AsyncSession],
    action: Callable[[], Awaitable[T]],
    *,
    max_backoff_s: float,
    on_outage: Callable[[Exception, float], None],
) -> T:
    """Run ``action`` until it succeeds, waiting while the database is away; any other
    error is raised at once. Before each wait ``on_outage(error, delay)`` is called, while
    the database still fails (a caller counting retries must not wait for the end of an
    outage that may never end)."""
    delay = FIRST_DELAY_S
    while True:
        try:
            return await action()
        except Exception as exc:
            if not await is_outage(sessions, exc):
                raise
            on_outage(exc, delay)
            if needs_new_connection(exc):  # pooled connections may point at a standby
                await sessions.kw["bind"].dispose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
