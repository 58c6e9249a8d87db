"""The `wb` command as a user runs it: real subprocesses, real databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import postgres as pg
from tests.helpers.cli import wb
from tests.helpers.factories import queued_messages
from tests.helpers.live import WB, eventually
from worker.storage.database import create_engine, session_factory
from worker.storage.models import AuditRow, HighlightRow, ScanCheckpointRow, SignalActivityRow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["signal-profile", "show", "abc"], "USER_ID"),
        (["signal-profile", "show", "0"], "USER_ID"),
        (["signal-profile", "override", "5"], "exactly one of --text or --file"),
        (["signal-profile", "freshness-scan", "--batch-size", "0"], "--batch-size"),
        (["signal-profile", "pause-regeneration", "--for", "soon"], "not a duration"),
        (["signal-profile", "pause-regeneration"], "--for"),
        (["signal-profile", "pause-regeneration", "--for", "P999999999D"], "year 9999"),
        (["signal-profile", "pause-regeneration", "--for", "99999999999d"], "not a duration"),
        (["nonsense"], "No such command"),
        # ids the store cannot hold: a driver's overflow (exit 1), or nothing done (exit 0)
        (["signal-profile", "reseed", "--users", "99999999999999999999"], "--users"),
        (["signal-profile", "reseed", "--users", "0,-5"], "got '0'"),
        (["signal-profile", "reseed", "--all", "--after", "99999999999999999999"], "--after"),
        (["signal-profile", "reseed", "--all", "--rate", "nan"], "not a finite number"),
        (["admin", "revoke-token", "99999999999999999999"], "TOKEN_ID"),
        # invalid UTF-8 in argv (Python escapes it to lone surrogates): not text
        (["signal-profile", "regenerate", "5", "--actor", "\udcff"], "argument b'\\xff'"),
        (["signal-profile", "override", "5", "--text", "a\udcffb"], "not text"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(
    sqlite_env: dict[str, str], args: list[str], message: str
) -> None:
    done = wb(*args, env=sqlite_env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("wb: error: ")
    assert message in done.stderr


def test_bad_setting_and_missing_schema_are_one_line_errors(tmp_path: Path) -> None:
    bad = wb("signal-profile", "show", "1", env={"WB_SWEEP_INTERVAL": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("wb: error: invalid setting WB_SWEEP_INTERVAL")
    fresh = wb("signal-profile", "show", "1", env={"WB_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert fresh.returncode == 1
    assert fresh.stderr == "wb: error: the database has no schema yet: run `wb db upgrade`\n"


def test_an_override_file_that_is_not_utf8_is_bad_usage(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "bio.txt").write_bytes(b"a\xffb")
    done = wb(
        "signal-profile", "override", "5", "--file", str(tmp_path / "bio.txt"), env=sqlite_env
    )
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    assert "'--file': the file is not UTF-8 text" in done.stderr


@pytest.mark.parametrize("how_long", ["30m", "PT30M", "1800"])  # as WB_* durations take them
def test_pause_and_resume_regeneration_for_every_worker(
    sqlite_env: dict[str, str], how_long: str
) -> None:
    before = datetime.now(UTC)
    paused = wb("signal-profile", "pause-regeneration", "--for", how_long, env=sqlite_env)
    assert paused.returncode == 0, paused.stderr
    until = datetime.fromisoformat(paused.stdout.strip().removeprefix("regeneration paused until "))
    assert before + timedelta(minutes=30) <= until <= datetime.now(UTC) + timedelta(minutes=30)
    report = wb("signal-profile", "freshness-report", "--json", env=sqlite_env)
    assert json.loads(report.stdout)["regen_paused_until"] == until.isoformat()
    resumed = wb("signal-profile", "resume-regeneration", env=sqlite_env)
    assert resumed.returncode == 0 and resumed.stdout == "regeneration resumed\n"
    report = wb("signal-profile", "freshness-report", "--json", env=sqlite_env)
    assert json.loads(report.stdout)["regen_paused_until"] is None


def test_operator_commands_change_the_row_and_are_audited(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    assert wb("signal-profile", "clear-override", "7", env=sqlite_env).returncode == 1
    text_file = tmp_path / "bio.txt"
    text_file.write_text("Curated <b>bio</b>\n", encoding="utf-8")
    locked = wb(
        "signal-profile",
        "override",
        "7",
        "--file",
        str(text_file),
        "--actor",
        "alice",
        env=sqlite_env,
    )
    assert locked.returncode == 0, locked.stderr
    shown = json.loads(wb("signal-profile", "show", "7", env=sqlite_env).stdout)
    assert shown["served"]["status"] == "overridden"
    assert shown["served"]["text"] == "Curated <b>bio</b>"
    regen = wb("signal-profile", "regenerate", "7", "--actor", "bob", env=sqlite_env)
    assert regen.returncode == 0 and "regeneration requested" in regen.stdout
    stale = wb(
        "signal-profile",
        "mark-stale",
        "7",
        "--reason",
        "bad quote",
        "--actor",
        "carol",
        env=sqlite_env,
    )
    assert stale.returncode == 0, stale.stderr
    cleared = wb("signal-profile", "clear-override", "7", "--actor", "alice", env=sqlite_env)
    assert cleared.returncode == 0

    async def audit() -> list[tuple[str, str, str | None]]:
        engine = create_engine(sqlite_env["WB_DATABASE_URL"])
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(AuditRow.actor, AuditRow.action, AuditRow.reason).order_by(AuditRow.id)
                )
            ).all()
        await engine.dispose()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    assert asyncio.run(audit()) == [
        ("alice", "set_override", None),
        ("bob", "regenerate", None),
        ("carol", "mark_stale", "bad quote"),
        ("alice", "clear_override", None),
    ]


async def _seed(engine: AsyncEngine, users: int) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(hours=1)
    rows = [
        {
            "user_id": u,
            "bio_text": "b",
            "snapshot_hash": f"s{u}",
            "generated_at": old,
            "stale_after": now + timedelta(days=7),
            "created_at": old,
            "updated_at": old,
        }
        for u in range(1, users + 1)
    ]
    activity = [
        {
            "user_id": u,
            "comment_count": 1,
            "last_comment_at": now - timedelta(minutes=1),
            "last_comment_type": "comment.created",
            "updated_at": now,
        }
        for u in range(1, users + 1)
    ]
    async with engine.begin() as conn:
        for start in range(0, users, 5000):
            await conn.execute(insert(HighlightRow), rows[start : start + 5000])
            await conn.execute(insert(SignalActivityRow), activity[start : start + 5000])


@pytest.mark.postgres
@pytest.mark.slow
def test_freshness_scan_killed_midway_resumes_where_it_stopped(pg_admin_url: str) -> None:
    url = asyncio.run(pg.create_database(pg_admin_url, prefix="wbscan"))
    env = {"WB_DATABASE_URL": url}
    try:
        assert wb("db", "upgrade", env=env).returncode == 0
        users = 30_000

        async def prepare() -> None:
            engine = create_engine(url)
            await _seed(engine, users)
            await engine.dispose()

        asyncio.run(prepare())
        scan = subprocess.Popen(
            [WB, "signal-profile", "freshness-scan", "--batch-size", "100"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            text=True,
        )

        async def progress() -> int | None:
            engine = create_engine(url)
            async with engine.connect() as conn:
                last = await conn.scalar(select(ScanCheckpointRow.last_user_id))
            await engine.dispose()
            return last if last and last >= 2_000 else None

        stopped_at = asyncio.run(eventually(progress, timeout=60, what="scan progress"))
        scan.send_signal(signal.SIGKILL)
        scan.wait()
        assert stopped_at < users

        resumed = wb("signal-profile", "freshness-scan", "--batch-size", "500", "--json", env=env)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["resumed"] is True
        assert summary["actions"] == {"new_comment": users}

        async def check() -> tuple[int, int, int]:
            engine = create_engine(url)
            async with engine.connect() as conn:
                stale = await conn.scalar(select(func.count()).where(HighlightRow.is_stale))
            messages = await queued_messages(session_factory(engine))
            await engine.dispose()
            return stale or 0, len(messages), len({m.key for m in messages})

        assert asyncio.run(check()) == (users, users, users)  # each user marked and asked once
        again = json.loads(wb("signal-profile", "freshness-scan", "--json", env=env).stdout)
        assert again["resumed"] is False and again["actions"] == {}
    finally:
        asyncio.run(pg.drop_database(pg_admin_url, url))


@pytest.mark.broker
@pytest.mark.slow
async def test_quick_start_run_serves_healthz_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """`wb run` with nothing configured: SQLite under ./var, the bundled broker, /healthz."""
    from tests.helpers.live import http_get
    from tests.helpers.ports import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WB_")}
    env.update(WB_WEB_PORT=str(port), WB_BROKER_SESSION_TIMEOUT="6")
    log_path = tmp_path / "run.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [WB, "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        async def healthy() -> bool:
            assert proc.poll() is None, "wb run exited"
            try:
                return (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz"))[
                    0
                ] == 200
            except OSError:
                return False

        await eventually(healthy, timeout=60, what="/healthz")
        assert (tmp_path / "var" / "wb-highlights.sqlite3").is_file()
        brokers = _children_named(proc.pid, "tansu")
        assert brokers, "no embedded broker process"
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 60)
    log.close()
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    assert all(not Path(f"/proc/{pid}").exists() for pid in brokers)


def _children_named(pid: int, name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]
