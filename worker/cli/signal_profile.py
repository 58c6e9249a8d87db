"""``wb signal-profile``: one user's highlight by hand, and the scans over all of them.

Each command parses its arguments and calls one service built by ``worker.runtime.services``
(the worker's wiring), so a mark made here follows the worker's regeneration policy.
"""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from worker.cli.common import print_json, with_services
from worker.cli.params import FiniteRange, duration, user_ids
from worker.domain.ids import MAX_USER_ID
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.runtime.services import Services
    from worker.services.cost_preview import CostPreview
    from worker.services.reseed import ReseedResult


@click.group("signal-profile")
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

    async def go(services: Services) -> dict[str, Any]:
        return await profile_document(services.store, user_id, settings.serve_stale_for)

    print_json(with_services(settings, go))


@signal_profile.command("mark-stale")
@user_arg
@click.option("--reason", required=True, help="Why it is stale (recorded in the audit log).")
@actor_opt
def mark_stale(user_id: int, reason: str, actor: str) -> None:
    """Mark a highlight stale (reason 'manual') and request a regeneration."""
    highlight, outcome = with_services(
        get_settings(), lambda s: s.store.mark_stale(user_id, "manual", actor=actor, note=reason)
    )
    click.echo(f"user {user_id}: stale (generation {highlight.generation}, {outcome.value})")


@signal_profile.command()
@user_arg
@actor_opt
@note_opt
def regenerate(user_id: int, actor: str, note: str | None) -> None:
    """Request a new generation now (reason 'manual')."""
    highlight = with_services(get_settings(), lambda s: s.store.regenerate(user_id, actor, note))
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
    with_services(get_settings(), lambda s: s.store.set_manual_override(user_id, body, actor, note))
    click.echo(f"user {user_id}: override locked")


@signal_profile.command("clear-override")
@user_arg
@actor_opt
@note_opt
def clear_override(user_id: int, actor: str, note: str | None) -> None:
    """Unlock a user's override (requests a regeneration if the row went stale meanwhile)."""
    highlight = with_services(
        get_settings(), lambda s: s.store.clear_manual_override(user_id, actor, note)
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
    from worker.services.sweep import ScanTotals

    progress = sys.stderr.isatty() and not as_json
    seen = {"n": 0}

    def on_chunk(chunk: ScanTotals, phase: str) -> None:
        seen["n"] += chunk.scanned
        if progress:
            click.echo(f"\r{phase}: {seen['n']} rows scanned", nl=False, err=True)

    totals, resumed = with_services(
        get_settings(),
        lambda s: s.freshness_scan(batch_size, dry_run, on_chunk).run(restart=restart),
    )
    if progress:
        click.echo("", err=True)
    summary = {**totals.as_dict(), "dry_run": dry_run, "resumed": resumed}
    if as_json:
        print_json(summary)
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
    pause = with_services(get_settings(), lambda s: s.store.pause_regeneration(until, actor))
    click.echo(f"regeneration paused until {pause.isoformat() if pause else '-'}")


@signal_profile.command("resume-regeneration")
@actor_opt
def resume_regeneration(actor: str) -> None:
    """End a pause now: queued requests go out, by priority, as the budget allows."""
    with_services(get_settings(), lambda s: s.store.pause_regeneration(None, actor))
    click.echo("regeneration resumed")


SPEND_LINE = (
    "${cost_usd:,.2f} over {results:,} results, {input_tokens:,} in + {output_tokens:,} out tokens"
)


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

    figures = with_services(get_settings(), lambda s: read(s.sessions, utcnow()))
    level, reasons = judge(figures, Thresholds(warn_after, error_after, warn_share, error_share))
    if as_json:
        print_json({**figures, "level": level.name.lower(), "reasons": reasons})
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            if key == "spend_today_utc":  # its total; --json has it by lane and reason
                value = SPEND_LINE.format(**value["total"])
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
    from worker.services.reseed import ReseedSelection

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

    async def run(services: Services) -> tuple[ReseedResult, CostPreview | None]:
        reseeder = services.reseeder(actor, rate, dry_run, on_chunk=progress)
        cost = await reseeder.preview(selection) if dry_run else None
        return await reseeder.run(selection, after), cost

    result, cost = with_services(get_settings(), run)
    click.echo(
        f"reseed{' (dry run)' if dry_run else ''}: {result.marked} marked stale, "
        f"{result.requested} regen requests"
        + (f" ({result.queued} queued within the budget)" if result.queued else "")
        + f", last user id {result.last_user_id}"
    )
    if cost is not None:  # from the usage results reported (README "What regeneration costs")
        click.echo(f"cost preview: {cost.describe()}")


@signal_profile.command("audit")
@user_arg
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def audit_log(user_id: int, limit: int, as_json: bool) -> None:
    """The audit log of one user, newest first."""
    entries = with_services(get_settings(), lambda s: s.audit().trail(user_id, limit))
    if as_json:
        print_json(entries)
        return
    for e in entries:
        changes = "; ".join(
            f"{k}: {v.get('old')!r} -> {v.get('new')!r}" for k, v in e["diff"].items()
        )
        click.echo(f"{e['at']}  {e['actor']}  {e['action']}  {e['reason'] or ''}  {changes}")
    if not entries:
        click.echo(f"no audit entries for user {user_id}")
