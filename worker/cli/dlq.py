"""``wb dlq``: the dead-letter topics."""

from __future__ import annotations

import asyncio

import click

from worker.cli.common import connection
from worker.settings import get_settings


@click.group()
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
    brokers = connection(settings)
    dlq_topic = dead_letter_topic(topic)
    result = asyncio.run(
        replay(
            brokers,
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
