"""``wb run``: the worker, with the bundled broker when no ``WB_KAFKA_BROKER`` is set."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worker.cli.common import CliError, with_services
from worker.settings import Settings, get_settings

if TYPE_CHECKING:
    from worker.runtime.services import Services

log = logging.getLogger("wb")


@click.command()
def run() -> None:
    """Run the worker. With no WB_KAFKA_BROKER, start the bundled broker too."""
    from worker.kafka.embedded import EmbeddedBroker

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
            settings = settings.on_embedded_broker(broker.address)
        with_services(settings, _prepare_database)
        asyncio.run(_prepare_topics(settings))
        _start_worker(settings)
    finally:
        if broker is not None:
            broker.stop()


async def _prepare_database(services: Services) -> None:
    """SQLite (the embedded default) is migrated on start; PostgreSQL must be migrated
    beforehand with ``wb db upgrade``, so that a deploy never changes a shared schema."""
    from worker.storage import migrate

    if services.settings.is_sqlite:
        await migrate.upgrade(services.engine)
        return
    current, head = await migrate.current_revision(services.engine), migrate.head_revision()
    if current != head:
        raise CliError(f"database is at revision {current}, code needs {head}: run `wb db upgrade`")


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
