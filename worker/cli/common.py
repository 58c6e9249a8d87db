"""What every ``wb`` command shares: the one way to reach the database (an engine scope
around the services the worker builds too), the broker, and JSON output.

A command's failures are raised, never printed: ``worker.cli.main`` turns each into its
one line and exit status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from worker.settings import Settings

if TYPE_CHECKING:
    from worker.kafka.connection import KafkaConnection
    from worker.runtime.services import Services

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line with exit status 1."""


def with_services(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``action`` in an event loop of its own, on the services the worker would build
    from ``settings``; the engine lives exactly as long (``connected``)."""
    from worker.runtime.services import connected

    async def scoped() -> T:
        async with connected(settings) as services:
            return await action(services)

    return asyncio.run(scoped())


def connection(settings: Settings) -> KafkaConnection:
    """The brokers ``WB_KAFKA_BROKER`` names; a command run beside an embedded broker must
    be told where it is."""
    from worker.kafka.connection import KafkaConnection

    if settings.kafka_broker is None:
        raise click.UsageError("set WB_KAFKA_BROKER (wb run prints the embedded broker's address)")
    return KafkaConnection.from_settings(settings)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))
