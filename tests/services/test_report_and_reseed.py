"""freshness-report levels and exit codes; reseed pacing and audit (both databases)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.cli import wb
from tests.helpers.clock import T0, FakeClock
from tests.helpers.factories import result
from worker.services import outbox
from worker.services.report import Level, Thresholds, gather, judge
from worker.services.reseed import Reseeder, ReseedSelection
from worker.services.store import HighlightStore
from worker.storage.database import create_engine, session_factory
from worker.storage.models import AuditRow


async def test_report_figures_and_levels(
    store: HighlightStore, clock: FakeClock, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for user in range(1, 5):
        await store.upsert_auto(result(user), f"s{user}")
    await store.mark_stale(1, "new_comment")
    clock.advance(timedelta(hours=2))
    async with sessions() as session:
        figures = await gather(session, clock.now)
    assert figures["total"] == 4
    assert figures["stale"] == 1
    assert figures["stale_share"] == 0.25
    assert figures["oldest_stale_age_s"] == 7200.0
    assert figures["pending_regenerations"] == 1
    assert judge(figures, Thresholds()) == (Level.OK, [])
    assert judge(figures, Thresholds(warn_after=timedelta(hours=1)))[0] is Level.WARN
    level, reasons = judge(figures, Thresholds(warn_after=timedelta(hours=1), error_share=0.2))
    assert level is Level.ERROR
    assert len(reasons) == 2


async def _expired_unswept(url: str, users: range) -> None:
    """Highlights past their ``stale_after`` (ten minutes ago) that no sweep has marked."""
    engine = create_engine(url)
    try:
        store = HighlightStore(session_factory(engine))
        now = datetime.now(UTC)
        for user in users:
            expired = result(
                user, generated_at=now - timedelta(days=1), stale_after=now - timedelta(minutes=10)
            )
            await store.upsert_auto(expired, f"s{user}")
    finally:
        await engine.dispose()


def test_report_exit_codes(tmp_path: Path) -> None:
    """The gate counts what clients are told: two rows past ``stale_after`` not swept yet
    are stale, a locked row marked stale underneath is not (a share of 2/3, not 1/3)."""
    url = f"sqlite:///{tmp_path}/r.db"
    env = {"WB_DATABASE_URL": url}
    assert wb("db", "upgrade", env=env).returncode == 0
    assert wb("signal-profile", "override", "3", "--text", "x", env=env).returncode == 0
    assert wb("signal-profile", "regenerate", "3", env=env).returncode == 0  # stale underneath
    asyncio.run(_expired_unswept(url, range(4, 6)))
    ok = wb("signal-profile", "freshness-report", "--warn-after", "1h", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "level" in ok.stdout
    warn = wb("signal-profile", "freshness-report", "--warn-share", "0.5", env=env)
    assert warn.returncode == 0
    assert "warn" in warn.stdout
    assert (
        wb(
            "signal-profile", "freshness-report", "--warn-share", "0.5", "--warn-error", env=env
        ).returncode
        == 1
    )
    error = wb("signal-profile", "freshness-report", "--error-share", "0.5", "--json", env=env)
    assert error.returncode == 2
    figures = json.loads(error.stdout)
    assert figures["level"] == "error"
    assert (figures["stale"], figures["overridden"], figures["stale_share"]) == (2, 1, 0.6667)
    assert 600 <= figures["oldest_stale_age_s"] < 3600  # since stale_after, not the lock's mark
    assert figures["spend_today_utc"]["total"]["cost_usd"] == 0  # no result reported usage
    assert "spend_today_utc" in ok.stdout and "$0.00 over 0 results" in ok.stdout
    dry = wb("signal-profile", "reseed", "--all", "--dry-run", "--actor", "ops", env=env)
    assert dry.returncode == 0, dry.stderr
    # No usage reported yet: each profile is the default estimate, its cost unknown.
    assert "cost preview: 2 profiles ≈ 4,000 tokens ≈ an unknown cost" in dry.stdout
    bad = wb("signal-profile", "freshness-report", "--warn-after", "soon", env=env)
    assert bad.returncode == 2
    assert "duration" in bad.stderr


async def test_reseed_marks_the_selection_at_the_bounded_rate(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for user in range(1, 251):
        await store.upsert_auto(result(user, llm_model="old" if user % 2 else "new"), f"s{user}")
    started = time.monotonic()
    done = await Reseeder(sessions, actor="ops", rate=50).run(ReseedSelection(llm_model="old"))
    elapsed = time.monotonic() - started
    assert done.marked == done.requested == 125
    # 125 marks at 50/s in chunks of 50: the third chunk may not start before 2 s.
    assert elapsed >= 2.0
    assert [round(t) for t in done.chunks[:2]] == [0, 1]
    async with sessions() as session:
        requests = await outbox.backlog(session)
        audits = await session.scalar(select(func.count()).where(AuditRow.action == "reseed"))
    assert requests == audits == 125
    untouched = await store.get(2)
    assert untouched is not None
    assert not untouched.is_stale


async def test_reseed_dry_run_changes_nothing(
    store: HighlightStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for user in range(1, 4):
        await store.upsert_auto(result(user, generated_at=T0), f"s{user}")
    done = await Reseeder(sessions, actor="ops", rate=1000, dry_run=True).run(
        ReseedSelection(user_ids=[1, 3])
    )
    assert done.marked == 2
    assert not any([(await store.get(u)).is_stale for u in (1, 2, 3)])  # type: ignore[union-attr]


def test_reseed_cli_needs_a_selection(tmp_path: Path) -> None:
    env = {"WB_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"}
    done = wb("signal-profile", "reseed", env=env)
    assert done.returncode == 2
    assert "choose what to reseed" in done.stderr


@pytest.mark.parametrize("rate", ["0", "-1"])
def test_reseed_cli_refuses_bad_rate(tmp_path: Path, rate: str) -> None:
    done = wb(
        "signal-profile",
        "reseed",
        "--all",
        "--rate",
        rate,
        env={"WB_DATABASE_URL": f"sqlite:///{tmp_path}/r.db"},
    )
    assert done.returncode == 2
