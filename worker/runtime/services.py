"""The one place the service objects are wired from the settings.

The worker (``Runtime``) and every ``wb`` command build their store, pipeline and scans
here, so a command run by hand acts under the same TTL and regeneration policy as the
worker beside it (a mark made from the CLI queues within the budget like the worker's),
and a new setting is wired once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from worker.domain.scheduling import RegenPolicy
from worker.domain.wire import InputStream
from worker.services.audit import AuditReader
from worker.services.auth import TokenService
from worker.services.pipeline import Pipeline
from worker.services.reseed import Reseeder, ReseedResult
from worker.services.scheduler import policy_from
from worker.services.store import HighlightStore
from worker.services.sweep import FreshnessScan, ScanTotals, Sweeper
from worker.settings import Settings
from worker.storage.database import create_engine, session_factory


@dataclass(frozen=True)
class Services:
    """One database's engine and the services over it. ``policy`` is the one every stale
    mark made through these services follows (another ``Services`` in the process, built
    from other settings, may hold another)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    policy: RegenPolicy
    store: HighlightStore

    @classmethod
    def open(cls, settings: Settings) -> Services:
        """A new engine on ``WB_DATABASE_URL`` (no connection yet); the caller disposes
        ``engine`` (``connected`` does it for a scope)."""
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        policy = policy_from(settings)
        store = HighlightStore(sessions, ttl=settings.highlight_ttl, policy=policy)
        return cls(settings, engine, sessions, policy, store)

    def input_engine(self) -> AsyncEngine:
        """An engine for the input batches alone (the caller disposes it): a connection per
        lane (``Settings.input_pool_size``) and no pre-ping, which is three of a batch's
        eight round trips. The batches need none: their retry loop waits out a dead
        connection like any outage and replaces the pool's when it must
        (``storage.outage.retry_through_outage``). Everything else keeps the pre-ping of
        ``engine``, so a panel request after a database restart gets a live connection.
        SQLite has no pool to ping: the one engine serves."""
        if self.settings.is_sqlite:
            return self.engine
        return create_engine(
            self.settings.database_url, pool_size=self.settings.input_pool_size, pre_ping=False
        )

    def pipeline(
        self, on_retry: Callable[[InputStream], None], engine: AsyncEngine | None = None
    ) -> Pipeline:
        """The input batches' pipeline, on ``engine`` (``input_engine``), else ``engine``."""
        return Pipeline(
            self.sessions if engine is None else session_factory(engine),
            ttl=self.settings.highlight_ttl,
            max_backoff_s=self.settings.db_retry_max_backoff,
            on_retry=on_retry,
            policy=self.policy,
            max_clock_skew=self.settings.max_clock_skew,
        )

    def sweeper(self) -> Sweeper:
        return Sweeper(
            self.sessions,
            retry_after=self.settings.regen_retry_after,
            chunk_size=self.settings.sweep_chunk,
            policy=self.policy,
        )

    def freshness_scan(
        self, batch_size: int, dry_run: bool, on_chunk: Callable[[ScanTotals, str], None]
    ) -> FreshnessScan:
        return FreshnessScan(
            self.sessions,
            self.settings.regen_retry_after,
            batch_size=batch_size,
            dry_run=dry_run,
            on_chunk=on_chunk,
            policy=self.policy,
        )

    def reseeder(
        self, actor: str, rate: float, dry_run: bool, on_chunk: Callable[[ReseedResult], None]
    ) -> Reseeder:
        return Reseeder(self.sessions, actor, rate, dry_run, on_chunk=on_chunk, policy=self.policy)

    def tokens(self) -> TokenService:
        return TokenService(self.sessions)

    def audit(self) -> AuditReader:
        return AuditReader(self.sessions)


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Services]:
    """The services for the length of one piece of work (a ``wb`` command), the engine
    disposed after it however it ends, so no pooled connection outlives its event loop."""
    services = Services.open(settings)
    try:
        yield services
    finally:
        await services.engine.dispose()
