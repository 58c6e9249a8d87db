"""The ``wb`` command: run the worker, migrate, and operate on profiles by hand.

Errors are one line on stderr and a non-zero exit (2: bad usage, 1: refused or failed),
so scripts and on-call engineers can rely on both.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from worker.errors import StoreError
from worker.settings import Settings, get_settings

T = TypeVar("T")
_SCHEMA_MISSING = re.compile(r"no such table|relation .* does not exist|UndefinedTable")
log = logging.getLogger("wb")


class CliError(Exception):
    """A failure to report as one line with exit status 1."""


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


async def _with_store(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from worker.db import create_engine, session_factory
    from worker.store import HighlightStore

    engine = create_engine(settings.database_url)
    try:
        return await action(HighlightStore(session_factory(engine), ttl=settings.highlight_ttl))
    finally:
        await engine.dispose()


@click.group()
def cli() -> None:
    """wb-highlights: profile highlights that stay stored, fresh and trustworthy."""


# --- wb run ----------------------------------------------------------------------------


@cli.command()
def run() -> None:
    """Run the worker. With no WB_KAFKA_BROKER, start the bundled broker too."""
    from worker.broker import EmbeddedBroker
    from worker.settings import normalize_broker

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    broker = None
    try:
        if settings.is_embedded:
            Path("var").mkdir(exist_ok=True)
            broker = EmbeddedBroker(log_path=Path("var") / "broker.log").start()
            log.info("embedded broker listening on %s", broker.address)
            settings = settings.model_copy(
                update={"kafka_broker": normalize_broker(broker.address)}
            )
        _run(_prepare_database(settings))
        _start_worker(settings)
    finally:
        if broker is not None:
            broker.stop()


async def _prepare_database(settings: Settings) -> None:
    """SQLite (the embedded default) is migrated on start; PostgreSQL must be migrated
    beforehand with ``wb db upgrade``, so that a deploy never changes a shared schema."""
    from worker import migrate
    from worker.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        if settings.is_sqlite:
            await migrate.upgrade(engine)
            return
        current, head = await migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            raise CliError(
                f"database is at revision {current}, code needs {head}: run `wb db upgrade`"
            )
    finally:
        await engine.dispose()


def _start_worker(settings: Settings) -> None:
    import faust

    from worker.agents import create_app

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level)
    worker.execute_from_commandline()


# --- wb db -----------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Apply migrations (Alembic) to WB_DATABASE_URL."""
    from worker import migrate
    from worker.db import create_engine

    async def go() -> str | None:
        engine = create_engine(get_settings().database_url)
        try:
            await migrate.upgrade(engine, revision)
            return await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    click.echo(f"database at revision {_run(go())}")


# --- wb signal-profile -------------------------------------------------------------------


@cli.group("signal-profile")
def signal_profile() -> None:
    """Inspect and operate on one user's highlight, or scan all of them."""


user_arg = click.argument("user_id", type=click.IntRange(min=1, max=2**63 - 1))
actor_opt = click.option(
    "--actor",
    default=lambda: getpass.getuser(),
    show_default="the OS user",
    help="Who is doing this (recorded in the audit log).",
)
note_opt = click.option("--note", default=None, help="Why (recorded in the audit log).")


@signal_profile.command()
@user_arg
def show(user_id: int) -> None:
    """Print a user's highlight, freshness and recorded Signal activity as JSON."""
    from worker.views import profile_document

    settings = get_settings()

    async def go(store: Any) -> dict[str, Any]:
        return await profile_document(store, user_id, settings.serve_stale_for)

    _print_json(_run(_with_store(settings, go)))


@signal_profile.command("mark-stale")
@user_arg
@click.option("--reason", required=True, help="Why it is stale (recorded in the audit log).")
@actor_opt
def mark_stale(user_id: int, reason: str, actor: str) -> None:
    """Mark a highlight stale (reason 'manual') and request a regeneration."""
    highlight, outcome = _run(
        _with_store(
            get_settings(), lambda s: s.mark_stale(user_id, "manual", actor=actor, note=reason)
        )
    )
    click.echo(f"user {user_id}: stale (generation {highlight.generation}, {outcome.value})")


@signal_profile.command()
@user_arg
@actor_opt
@note_opt
def regenerate(user_id: int, actor: str, note: str | None) -> None:
    """Request a new generation now (reason 'manual')."""
    highlight = _run(_with_store(get_settings(), lambda s: s.regenerate(user_id, actor, note)))
    click.echo(f"user {user_id}: regeneration requested ({highlight.regen_request_id})")


@signal_profile.command()
@user_arg
@click.option("--text", "text_", default=None, help="The override text.")
@click.option(
    "--file",
    "file_",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="Read the override text from a file ('-' for stdin).",
)
@actor_opt
@note_opt
def override(user_id: int, text_: str | None, file_: Any, actor: str, note: str | None) -> None:
    """Lock what is served for a user to the given text."""
    if (text_ is None) == (file_ is None):
        raise click.UsageError("give exactly one of --text or --file")
    body = text_ if text_ is not None else file_.read()
    _run(_with_store(get_settings(), lambda s: s.set_manual_override(user_id, body, actor, note)))
    click.echo(f"user {user_id}: override locked")


@signal_profile.command("clear-override")
@user_arg
@actor_opt
@note_opt
def clear_override(user_id: int, actor: str, note: str | None) -> None:
    """Unlock a user's override (requests a regeneration if the row went stale meanwhile)."""
    highlight = _run(
        _with_store(get_settings(), lambda s: s.clear_manual_override(user_id, actor, note))
    )
    extra = f", regeneration {highlight.regen_request_id}" if highlight.regen_request_id else ""
    click.echo(f"user {user_id}: override cleared{extra}")


@signal_profile.command("freshness-scan")
@click.option("--dry-run", is_flag=True, help="Report what would change; change nothing.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--restart", is_flag=True, help="Ignore an interrupted scan's checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def freshness_scan(dry_run: bool, batch_size: int, restart: bool, as_json: bool) -> None:
    """Mark expired rows and rows behind their recorded Signal activity stale; retry stuck
    requests; request first generations. Resumes an interrupted scan unless --restart."""
    from worker.db import create_engine, session_factory
    from worker.sweep import FreshnessScan, ScanTotals

    settings = get_settings()
    progress = sys.stderr.isatty() and not as_json
    seen = {"n": 0}

    def on_chunk(chunk: ScanTotals, phase: str) -> None:
        seen["n"] += chunk.scanned
        if progress:
            click.echo(f"\r{phase}: {seen['n']} rows scanned", nl=False, err=True)

    async def go() -> tuple[ScanTotals, bool]:
        engine = create_engine(settings.database_url)
        try:
            scan = FreshnessScan(
                session_factory(engine),
                settings.regen_retry_after,
                batch_size=batch_size,
                dry_run=dry_run,
                on_chunk=on_chunk,
            )
            return await scan.run(restart=restart)
        finally:
            await engine.dispose()

    totals, resumed = _run(go())
    if progress:
        click.echo("", err=True)
    summary = {**totals.as_dict(), "dry_run": dry_run, "resumed": resumed}
    if as_json:
        _print_json(summary)
        return
    actions = ", ".join(f"{k}={v}" for k, v in sorted(totals.actions.items())) or "nothing to do"
    requested = sum(totals.requests.values())
    click.echo(
        f"freshness-scan{' (dry run)' if dry_run else ''}{' (resumed)' if resumed else ''}: "
        f"{totals.scanned} candidates, {actions}; {requested} regen requests"
    )


# --- entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``wb``; every failure is one line on stderr."""
    try:
        cli.main(args=argv, prog_name="wb", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("wb: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"wb: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # settings from the environment
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        click.echo(f"wb: error: invalid setting WB_{where.upper()}: {first['msg']}", err=True)
        sys.exit(2)
    except (StoreError, CliError) as exc:
        click.echo(f"wb: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # database down, bad URL, ...: still one line
        from worker.db import is_transient

        first_line = str(exc).splitlines()[0] if str(exc) else ""
        if _SCHEMA_MISSING.search(first_line):
            click.echo("wb: error: the database has no schema yet: run `wb db upgrade`", err=True)
        else:
            kind = "database unreachable" if is_transient(exc) else type(exc).__name__
            click.echo(f"wb: error: {kind}: {first_line}", err=True)
        sys.exit(1)
    sys.exit(0)
