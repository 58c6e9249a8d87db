"""The panel's profile list: filters, two orders, keyset pages; and bulk regenerate.

Pages are keyset-paginated (never ``OFFSET``): a page names the last row it showed in an
opaque cursor and the next page starts after it, on an index whatever the page number
(``ix_user_profile_highlights_*``, migration 0007; a PostgreSQL test reads the plans):

- by change: ``updated_at`` descending, then ``user_id`` descending;
- by staleness: stale rows first, oldest ``stale_since`` first, then the rows that are not
  stale by ``user_id`` (the cursor says which of the two runs it is in).

A filter by state uses ``state_filter`` (the one freshness rule). Bulk regenerate is a
reseed (``worker.services.reseed``) of a filtered selection, started in the worker process
and paced by ``WB_BULK_RATE``; every row it marks is audited to the admin who confirmed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from worker.domain.errors import InvalidInput
from worker.domain.freshness import FreshnessState
from worker.domain.ids import user_id_from_text
from worker.domain.scheduling import IMMEDIATE, RegenPolicy
from worker.domain.values import TIMESTAMP_RANGE, StaleReason, in_utc, utcnow
from worker.services.cost_preview import CostPreview
from worker.services.reseed import Reseeder, ReseedResult
from worker.storage.database import snapshot
from worker.storage.freshness import state_column
from worker.storage.freshness import state_filter as state_condition
from worker.storage.models import HighlightRow as H

log = logging.getLogger(__name__)
Statement = Select[*tuple[Any, ...]]
PAGE_SIZE = 50
MAX_TEXT = 200  # llm_model and source_group columns are String(200)
JOBS_KEPT = 10


class Sort(StrEnum):
    STALENESS = "staleness"
    CHANGE = "change"


def _choice(kind: type[StrEnum], value: str | None, name: str) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(k.value for k in kind)
        raise InvalidInput(f"{name} must be one of: {allowed}") from None


def _text(value: str | None, name: str) -> str | None:
    value = (value or "").strip()
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{name} is longer than {MAX_TEXT} characters")
    return value or None


@dataclass(frozen=True)
class ProfileFilter:
    """Which profiles: every field optional, all given ones must hold."""

    state: FreshnessState | None = None
    stale_reason: StaleReason | None = None
    override: bool | None = None
    llm_model: str | None = None
    source_group: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> ProfileFilter:
        """From a query string's or a form's text fields (unknown values are refused)."""
        override = params.get("override") or None
        if override not in (None, "locked", "unlocked"):
            raise InvalidInput("override must be locked or unlocked")
        return cls(
            state=_choice(FreshnessState, params.get("state"), "state"),
            stale_reason=_choice(StaleReason, params.get("reason"), "reason"),
            override=None if override is None else override == "locked",
            llm_model=_text(params.get("model"), "model"),
            source_group=_text(params.get("source_group"), "source_group"),
        )

    def params(self) -> dict[str, str]:
        """The fields as query parameters: what ``parse`` reads back."""
        out = {
            "state": self.state.value if self.state else None,
            "reason": self.stale_reason.value if self.stale_reason else None,
            "override": None
            if self.override is None
            else "locked"
            if self.override
            else "unlocked",
            "model": self.llm_model,
            "source_group": self.source_group,
        }
        return {k: v for k, v in out.items() if v is not None}

    @property
    def runs(self) -> tuple[str, ...]:
        """The staleness order's runs this filter can match (a stale reason or the stale
        state never match a row that is not stale; the fresh state never a stale one)."""
        if self.stale_reason is not None or self.state is FreshnessState.STALE:
            return ("s",)
        if self.state is FreshnessState.FRESH:
            return ("n",)
        return ("s", "n")

    def condition(self, now: datetime) -> ColumnElement[bool]:
        clauses: list[ColumnElement[bool]] = [true()]
        if self.state is not None:
            clauses.append(state_condition(self.state, now))
        if self.stale_reason is not None:
            clauses += [H.is_stale == true(), H.stale_reason == self.stale_reason.value]
        if self.override is not None:
            clauses.append(H.manual_override == (true() if self.override else false()))
        if self.llm_model is not None:
            clauses.append(H.llm_model == self.llm_model)
        if self.source_group is not None:
            clauses.append(H.source_group == self.source_group)
        return and_(*clauses)


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: ``run`` is ``c`` (by change), ``s`` (stale rows by
    ``stale_since``) or ``n`` (rows that are not stale, by user id)."""

    run: str
    user_id: int
    at: datetime | None = None

    def text(self) -> str:
        return f"{self.run}~{self.at.isoformat() if self.at else ''}~{self.user_id}"

    @classmethod
    def parse(cls, text: str | None, sort: Sort) -> Cursor | None:
        """A cursor a client sends back: its time must be aware and have a UTC form both
        databases take (``in_utc``), its user id 0 (a run's start) or a user id."""
        if not text:
            return None
        try:
            run, at_text, uid_text = text.split("~")
            at = datetime.fromisoformat(at_text) if at_text else None
        except ValueError:
            raise InvalidInput("the page cursor is not one this list made") from None
        user_id = 0 if uid_text == "0" else user_id_from_text(uid_text)
        runs = ("c",) if sort is Sort.CHANGE else ("s", "n")
        if (
            run not in runs
            or user_id is None
            or (run in ("c", "s")) != (at is not None)
            or (at is not None and at.utcoffset() is None)
        ):
            raise InvalidInput("the page cursor is not one this list made")
        if at is not None and (at := in_utc(at)) is None:
            raise InvalidInput(f"the page cursor's time is out of range: {TIMESTAMP_RANGE}")
        return cls(run, user_id, at)


@dataclass(frozen=True)
class ProfileQuery:
    filter: ProfileFilter = field(default_factory=ProfileFilter)
    sort: Sort = Sort.STALENESS
    cursor: Cursor | None = None
    limit: int = PAGE_SIZE

    @classmethod
    def parse(cls, params: dict[str, str]) -> ProfileQuery:
        """From a query string: the filter, ``sort`` and the ``after`` cursor."""
        sort = _choice(Sort, params.get("sort"), "sort") or Sort.STALENESS
        return cls(ProfileFilter.parse(params), sort, Cursor.parse(params.get("after"), sort))


@dataclass(frozen=True)
class ProfilePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


COLUMNS = (
    H.user_id,
    H.stale_reason,
    H.stale_since,
    H.updated_at,
    H.generated_at,
    H.llm_model,
    H.source_group,
    H.manual_override,
    H.regen_requested_at,
    H.is_stale,
)


def _change_statement(query: ProfileQuery, now: datetime) -> Statement:
    stmt = select(*COLUMNS, state_column(now).label("state")).where(query.filter.condition(now))
    if query.cursor is not None:
        stmt = stmt.where(
            tuple_(H.updated_at, H.user_id) < tuple_(query.cursor.at, query.cursor.user_id)
        )
    return stmt.order_by(H.updated_at.desc(), H.user_id.desc()).limit(query.limit + 1)


def _staleness_statement(query: ProfileQuery, now: datetime, run: str) -> Statement:
    """One of the two runs of the staleness order (``s``: stale rows, ``n``: the others)."""
    stmt = select(*COLUMNS, state_column(now).label("state")).where(query.filter.condition(now))
    c = query.cursor
    if run == "s":
        stmt = stmt.where(H.is_stale == true())
        if c is not None and c.run == "s":
            stmt = stmt.where(tuple_(H.stale_since, H.user_id) > tuple_(c.at, c.user_id))
        return stmt.order_by(H.stale_since, H.user_id).limit(query.limit + 1)
    stmt = stmt.where(H.is_stale == false())
    if c is not None and c.run == "n":
        stmt = stmt.where(H.user_id > c.user_id)
    return stmt.order_by(H.user_id).limit(query.limit + 1)


def list_statements(query: ProfileQuery, now: datetime) -> list[tuple[str, Statement]]:
    """The statements a page may run, in order, each with its run's name (a test EXPLAINs
    them on PostgreSQL)."""
    if query.sort is Sort.CHANGE:
        return [("c", _change_statement(query, now))]
    order = ("s", "n")  # stale rows first, then the others
    first = order.index(query.cursor.run) if query.cursor is not None else 0
    runs = [r for r in order[first:] if r in query.filter.runs]
    return [(run, _staleness_statement(query, now, run)) for run in runs]


def _row(r: Any) -> dict[str, Any]:
    return {
        "user_id": r.user_id,
        "state": r.state,
        "stale_reason": r.stale_reason if r.is_stale else None,
        "stale_since": r.stale_since,
        "updated_at": r.updated_at,
        "generated_at": r.generated_at,
        "llm_model": r.llm_model,
        "source_group": r.source_group,
        "manual_override": r.manual_override,
        "pending_since": r.regen_requested_at,
    }


def _cursor_of(run: str, row: dict[str, Any]) -> Cursor:
    at = {"c": row["updated_at"], "s": row["stale_since"], "n": None}[run]
    return Cursor(run, row["user_id"], at)


async def list_page(session: AsyncSession, query: ProfileQuery, now: datetime) -> ProfilePage:
    rows: list[dict[str, Any]] = []
    for run, stmt in list_statements(query, now):
        want = query.limit - len(rows)
        found = [_row(r) for r in (await session.execute(stmt.limit(want + 1))).all()]
        if want == 0 and found:  # the page is full and the next run has rows: start it
            return ProfilePage(rows, Cursor(run, 0).text())
        rows += found[:want]
        if len(found) > want:  # more in this run: the page ends inside it
            return ProfilePage(rows, _cursor_of(run, rows[-1]).text())
    return ProfilePage(rows, None)


@dataclass(frozen=True)
class BulkSelection:
    """A profile filter fixed at one moment (a state depends on the time): a reseed
    ``Selection``."""

    filter: ProfileFilter
    at: datetime

    def condition(self) -> ColumnElement[bool]:
        return self.filter.condition(self.at)


@dataclass
class BulkJob:
    id: int
    actor: str
    filter: ProfileFilter
    total: int
    started_at: datetime
    result: ReseedResult = field(default_factory=ReseedResult)
    finished_at: datetime | None = None
    error: str | None = None


@dataclass
class ProfileListService:
    """Many profiles at once, for the panel: a page of the list, how many a selection holds,
    and the bulk regenerate jobs this worker runs (one profile: ``services.documents``)."""

    sessions: async_sessionmaker[AsyncSession]
    bulk_rate: float = 50.0
    on_requests: Callable[[], None] | None = None  # wakes the outbox relay
    clock: Callable[[], datetime] = utcnow
    policy: RegenPolicy = IMMEDIATE  # the bulk regenerates' (the worker's own)
    jobs: list[BulkJob] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def page(self, query: ProfileQuery) -> ProfilePage:
        """One page, its runs read in one snapshot (a row moving between them shows once)."""
        async with snapshot(self.sessions) as session:
            return await list_page(session, query, self.clock())

    def reseeder(self, actor: str, note: str | None = None) -> Reseeder:
        return Reseeder(
            self.sessions,
            actor,
            self.bulk_rate,
            action="bulk_regenerate",
            note=note,
            on_chunk=lambda _result: self.on_requests() if self.on_requests else None,
            policy=self.policy,
        )

    async def count(self, selection: ProfileFilter) -> int:
        """How many profiles a bulk regenerate of ``selection`` would mark now."""
        return await self.reseeder("count").count(BulkSelection(selection, self.clock()))

    async def preview(self, selection: ProfileFilter) -> CostPreview:
        """What a bulk regenerate of ``selection`` would likely cost (the confirmation's)."""
        return await self.reseeder("count").preview(BulkSelection(selection, self.clock()))

    async def start_bulk(
        self, selection: ProfileFilter, actor: str, expected: int, note: str | None = None
    ) -> BulkJob:
        """Start regenerating ``selection`` (paced, in the background) if it still holds
        the ``expected`` count the admin confirmed; else ``SelectionChanged``."""
        reseeder = self.reseeder(actor, note)
        now = self.clock()
        chosen = BulkSelection(selection, now)
        total = await reseeder.count(chosen)
        if total != expected:
            raise SelectionChanged(total)
        job = BulkJob(next(self._ids), reseeder.actor, selection, total, now)
        self.jobs = [job, *self.jobs][:JOBS_KEPT]
        reseeder.on_chunk = lambda result: self._progress(job, result)
        task = asyncio.ensure_future(self._run(job, reseeder, chosen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def _progress(self, job: BulkJob, result: ReseedResult) -> None:
        job.result = replace(result, chunks=[])
        if self.on_requests is not None:
            self.on_requests()

    async def _run(self, job: BulkJob, reseeder: Reseeder, selection: BulkSelection) -> None:
        try:
            job.result = await reseeder.run(selection)
        except Exception as exc:  # shown on the page; the rows done so far stay done
            log.exception("bulk regenerate %d failed", job.id)
            job.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        finally:
            job.finished_at = utcnow()

    async def wait(self) -> None:
        """Until every running bulk job is done (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class SelectionChanged(Exception):
    """The selection no longer holds the number of profiles the admin confirmed."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the selection now holds {count} profiles")
        self.count = count
