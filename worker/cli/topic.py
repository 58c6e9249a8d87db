"""``wb topic``: type and read topic messages by hand."""

from __future__ import annotations

import asyncio
import sys

import click

from worker.cli.common import connection
from worker.settings import get_settings


@click.group()
def topic() -> None:
    """Type and read topic messages by hand (like kcat)."""


@topic.command("produce")
@click.argument("name")
@click.option("--key", help="Message key for every line (e.g. the user id).")
def topic_produce(name: str, key: str | None) -> None:
    """Send each line of stdin to topic NAME as one message."""
    from worker.kafka.topic_tool import produce

    sent = asyncio.run(produce(connection(get_settings()), name, sys.stdin, key))
    click.echo(f"{sent} messages sent to {name}", err=True)


@topic.command("tail")
@click.argument("name")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--exit", "exit_at_end", is_flag=True, help="Stop at the end instead of following.")
def topic_tail(name: str, from_beginning: bool, exit_at_end: bool) -> None:
    """Print messages of topic NAME as `partition:offset key=K VALUE headers={...}`."""
    from worker.kafka.topic_tool import tail

    asyncio.run(
        tail(
            connection(get_settings()),
            name,
            click.echo,
            from_beginning=from_beginning,
            exit_at_end=exit_at_end,
        )
    )
