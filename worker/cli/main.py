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
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from worker.cli.params import FiniteRange, duration, first_bad_argument, user_ids
from worker.domain.errors import StoreError
from worker.domain.ids import MAX_BIGINT, MAX_USER_ID
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    from worker.kafka.connection import KafkaConnection

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
    from worker.services.scheduler import policy_from
    from worker.services.store import HighlightStore
    from worker.storage.database import create_engine, session_factory

    engine = create_engine(settings.database_url)
    try:
        store = HighlightStore(
            session_factory(engine),
            ttl=settings.highlight_ttl,
            policy=policy_from(settings),  # requests queue as in the worker
        )
        return await action(store)
    finally:
        await engine.dispose()


@click.group()
def cli() -> None:
    """wb-highlights: profile highlights that stay stored, fresh and trustworthy."""


# --- wb run ----------------------------------------------------------------------------


@cli.command()
def run() -> None:
    """Run the worker. With no WB_KAFKA_BROKER, start the bundled broker too."""
    from worker.kafka.embedded import EmbeddedBroker
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
        _run(_prepare_topics(settings))
        _start_worker(settings)
    finally:
        if broker is not None:
            broker.stop()


async def _prepare_database(settings: Settings) -> None:
    """SQLite (the embedded default) is migrated on start; PostgreSQL must be migrated
    beforehand with ``wb db upgrade``, so that a deploy never changes a shared schema."""
    from worker.storage import migrate
    from worker.storage.database import create_engine

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


async def _prepare_topics(settings: Settings) -> None:
    """Fail fast, in one line, when the brokers refuse us (wrong password, untrusted
    certificate, nobody listening), and create the worker's topics that are missing."""
    from worker.kafka.app import worker_topics
    from worker.kafka.connection import KafkaConnection, prepare_topics

    created = await prepare_topics(
        KafkaConnection.from_settings(settings),
        worker_topics(settings),
        settings.topic_partitions,
        settings.topic_replication_factor,
    )
    if created:
        log.info("created topics: %s", ", ".join(created))


def _start_worker(settings: Settings) -> None:
    from worker.kafka.app import Worker, create_app

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    worker = Worker(app, settings.shutdown_timeout.total_seconds(), loglevel=settings.log_level)
    worker.execute_from_commandline()


# --- wb db -----------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Apply migrations (Alembic) to WB_DATABASE_URL."""
    from worker.storage import migrate
    from worker.storage.database import create_engine

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


user_arg = click.argument("user_id", type=click.IntRange(min=1, max=MAX_USER_ID))
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
    from worker.services.documents import profile_document

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
    try:
        body = text_ if text_ is not None else file_.read()
    except UnicodeDecodeError:
        raise click.BadParameter("the file is not UTF-8 text", param_hint="'--file'") from None
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
    from worker.services.sweep import FreshnessScan, ScanTotals
    from worker.storage.database import create_engine, session_factory

    settings = get_settings()
    progress = sys.stderr.isatty() and not as_json
    seen = {"n": 0}

    def on_chunk(chunk: ScanTotals, phase: str) -> None:
        seen["n"] += chunk.scanned
        if progress:
            click.echo(f"\r{phase}: {seen['n']} rows scanned", nl=False, err=True)

    async def go() -> tuple[ScanTotals, bool]:
        from worker.services.scheduler import policy_from

        engine = create_engine(settings.database_url)
        try:
            scan = FreshnessScan(
                session_factory(engine),
                settings.regen_retry_after,
                batch_size=batch_size,
                dry_run=dry_run,
                on_chunk=on_chunk,
                policy=policy_from(settings),
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


@signal_profile.command("pause-regeneration")
@click.option("--for", "for_", required=True, callback=duration, help="How long: 30m, 2h, PT1H.")
@actor_opt
def pause_regeneration(for_: timedelta, actor: str) -> None:
    """Stop every worker releasing queued regeneration requests for a while (a generator
    outage, a bill to watch); they keep queueing and go out, by priority, after."""
    from worker.domain.values import utcnow

    if for_ <= timedelta(0):
        raise click.BadParameter("must be longer than 0", param_hint="'--for'")
    try:
        until = utcnow() + for_
    except OverflowError:
        raise click.BadParameter("ends after the year 9999", param_hint="'--for'") from None
    pause = _run(_with_store(get_settings(), lambda s: s.pause_regeneration(until, actor)))
    click.echo(f"regeneration paused until {pause.isoformat() if pause else '-'}")


@signal_profile.command("resume-regeneration")
@actor_opt
def resume_regeneration(actor: str) -> None:
    """End a pause now: queued requests go out, by priority, as the budget allows."""
    _run(_with_store(get_settings(), lambda s: s.pause_regeneration(None, actor)))
    click.echo("regeneration resumed")


@signal_profile.command("freshness-report")
@click.option("--warn-after", callback=duration, help="Warn when the oldest stale is older.")
@click.option("--error-after", callback=duration, help="Error when the oldest stale is older.")
@click.option("--warn-share", type=FiniteRange(0, 1), help="Warn above this stale share.")
@click.option("--error-share", type=FiniteRange(0, 1), help="Error above this stale share.")
@click.option("--warn-error", is_flag=True, help="Exit 1 on warnings (default: 0).")
@click.option("--json", "as_json", is_flag=True)
def freshness_report(
    warn_after: timedelta | None,
    error_after: timedelta | None,
    warn_share: float | None,
    error_share: float | None,
    warn_error: bool,
    as_json: bool,
) -> None:
    """Freshness figures; exit 0 (ok), 1 (warn, with --warn-error) or 2 (error)."""
    from worker.domain.values import utcnow
    from worker.services.report import Level, Thresholds, judge, read

    async def go(store: Any) -> dict[str, Any]:
        return await read(store.sessions, utcnow())

    figures = _run(_with_store(get_settings(), go))
    level, reasons = judge(figures, Thresholds(warn_after, error_after, warn_share, error_share))
    if as_json:
        _print_json({**figures, "level": level.name.lower(), "reasons": reasons})
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            click.echo(f"{key:<{width}}  {value}")
        click.echo(
            f"{'level':<{width}}  {level.name.lower()}" + "".join(f"\n  - {r}" for r in reasons)
        )
    code = {Level.OK: 0, Level.WARN: 1 if warn_error else 0, Level.ERROR: 2}[level]
    raise click.exceptions.Exit(code)


@signal_profile.command()
@click.option("--all", "everything", is_flag=True, help="Every generated highlight.")
@click.option("--users", callback=user_ids, help="Comma-separated user ids.")
@click.option("--model", "llm_model", help="Only highlights made by this llm_model.")
@click.option("--source-group", help="Only highlights of this source_group.")
@click.option(
    "--rate",
    type=FiniteRange(min=0.1),
    default=50.0,
    show_default=True,
    help="At most this many stale marks per second (requests then go out within WB_REGEN_RATE).",
)
@click.option(
    "--after", type=click.IntRange(0, MAX_USER_ID), default=0, help="Resume after this user id."
)
@click.option("--dry-run", is_flag=True)
@actor_opt
def reseed(
    everything: bool,
    users: list[int] | None,
    llm_model: str | None,
    source_group: str | None,
    rate: float,
    after: int,
    dry_run: bool,
    actor: str,
) -> None:
    """Mark many highlights stale (reason 'manual') at a bounded rate; audited per user."""
    from worker.services.reseed import Reseeder, ReseedResult, ReseedSelection

    if not (everything or users or llm_model or source_group):
        raise click.UsageError("choose what to reseed: --all, --users, --model or --source-group")
    selection = ReseedSelection(user_ids=users, llm_model=llm_model, source_group=source_group)

    def progress(result: ReseedResult) -> None:
        if sys.stderr.isatty():
            click.echo(
                f"\rreseed: {result.marked} marked, last user {result.last_user_id}",
                nl=False,
                err=True,
            )

    async def go(store: Any) -> ReseedResult:
        reseeder = Reseeder(
            store.sessions, actor, rate, dry_run, on_chunk=progress, policy=store.policy
        )
        return await reseeder.run(selection, after)

    result = _run(_with_store(get_settings(), go))
    click.echo(
        f"reseed{' (dry run)' if dry_run else ''}: {result.marked} marked stale, "
        f"{result.requested} regen requests"
        + (f" ({result.queued} queued within the budget)" if result.queued else "")
        + f", last user id {result.last_user_id}"
    )


@cli.group()
def dlq() -> None:
    """Dead-letter topics."""


@dlq.command("replay")
@click.argument("topic")
@click.option("--error", "only_error", help="Only dead letters with this error header.")
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many.")
@click.option("--dry-run", is_flag=True, help="Count what would be replayed; send nothing.")
def dlq_replay(topic: str, only_error: str | None, limit: int | None, dry_run: bool) -> None:
    """Send the dead letters of TOPIC (an input topic or its .dlq) back to their source."""
    from worker.kafka.dead_letters import dead_letter_topic, replay

    settings = get_settings()
    connection = _connection(settings)
    dlq_topic = dead_letter_topic(topic)
    result = _run(
        replay(
            connection,
            dlq_topic,
            f"{settings.app_id}-dlq-replay",
            only_error=only_error,
            limit=limit,
            dry_run=dry_run,
        )
    )
    errors = ", ".join(f"{k}={v}" for k, v in sorted(result.by_error.items())) or "none"
    click.echo(
        f"dlq replay {dlq_topic}{' (dry run)' if dry_run else ''}: {result.replayed} "
        f"replayed ({errors}), {result.skipped} skipped"
    )


@signal_profile.command("audit")
@user_arg
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit_log(user_id: int, limit: int, as_json: bool) -> None:
    """The audit log of one user, newest first."""
    from worker.services.admin import AdminService

    entries = _run(_with_store(get_settings(), lambda s: AdminService(s).audit(user_id, limit)))
    if as_json:
        _print_json(entries)
        return
    for e in entries:
        changes = "; ".join(
            f"{k}: {v.get('old')!r} -> {v.get('new')!r}" for k, v in e["diff"].items()
        )
        click.echo(f"{e['at']}  {e['actor']}  {e['action']}  {e['reason'] or ''}  {changes}")
    if not entries:
        click.echo(f"no audit entries for user {user_id}")


@cli.group()
def admin() -> None:
    """Admin panel tokens."""


async def _with_tokens(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from worker.services.auth import TokenService

    return await _with_store(settings, lambda store: action(TokenService(store.sessions)))


@admin.command("create-token")
@click.option("--actor", required=True, help="Who will use it (shown in the audit log).")
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True)
def create_token(actor: str, role: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    token, row = _run(_with_tokens(get_settings(), lambda t: t.create(actor, role)))
    click.echo(token)
    click.echo(f"token {row.id} for {row.actor} ({row.role}); it is not shown again", err=True)


@admin.command("list-tokens")
def list_tokens() -> None:
    """Tokens: id, actor, role, created, revoked."""
    rows = _run(_with_tokens(get_settings(), lambda t: t.list()))
    for r in rows:
        state = f"revoked {r.revoked_at.isoformat()}" if r.revoked_at else "active"
        click.echo(f"{r.id}\t{r.actor}\t{r.role}\t{r.created_at.isoformat()}\t{state}")


@admin.command("revoke-token")
@click.argument("token_id", type=click.IntRange(1, MAX_BIGINT))
def revoke_token(token_id: int) -> None:
    """Revoke a token; its sessions stop working at once."""
    if not _run(_with_tokens(get_settings(), lambda t: t.revoke(token_id))):
        raise CliError(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")


def _connection(settings: Settings) -> KafkaConnection:
    from worker.kafka.connection import KafkaConnection

    if settings.kafka_broker is None:
        raise click.UsageError("set WB_KAFKA_BROKER (wb run prints the embedded broker's address)")
    return KafkaConnection.from_settings(settings)


@cli.group()
def topic() -> None:
    """Type and read topic messages by hand (like kcat)."""


@topic.command("produce")
@click.argument("name")
@click.option("--key", help="Message key for every line (e.g. the user id).")
def topic_produce(name: str, key: str | None) -> None:
    """Send each line of stdin to topic NAME as one message."""
    from worker.kafka.topic_tool import produce

    sent = _run(produce(_connection(get_settings()), name, sys.stdin, key))
    click.echo(f"{sent} messages sent to {name}", err=True)


@topic.command("tail")
@click.argument("name")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--exit", "exit_at_end", is_flag=True, help="Stop at the end instead of following.")
def topic_tail(name: str, from_beginning: bool, exit_at_end: bool) -> None:
    """Print messages of topic NAME as `partition:offset key=K VALUE headers={...}`."""
    from worker.kafka.topic_tool import tail

    _run(
        tail(
            _connection(get_settings()),
            name,
            click.echo,
            from_beginning=from_beginning,
            exit_at_end=exit_at_end,
        )
    )


# --- entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Run ``wb``; every failure is one line on stderr."""
    bad = first_bad_argument(sys.argv[1:] if argv is None else argv)
    if bad is not None:
        click.echo(f"wb: error: argument {bad} is not text (UTF-8 without NUL)", err=True)
        sys.exit(2)
    try:
        # Not standalone: click hands back `Exit` codes instead of exiting itself.
        code = cli.main(args=argv, prog_name="wb", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
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
        from worker.storage.database import is_transient

        first_line = str(exc).splitlines()[0] if str(exc) else ""
        if _SCHEMA_MISSING.search(first_line):
            click.echo("wb: error: the database has no schema yet: run `wb db upgrade`", err=True)
        else:
            kind = "database unreachable" if is_transient(exc) else type(exc).__name__
            click.echo(f"wb: error: {kind}: {first_line}", err=True)
        sys.exit(1)
