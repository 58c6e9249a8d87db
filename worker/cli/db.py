"""``wb db``: the database schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from worker.cli.common import with_services
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.runtime.services import Services


@click.group()
def db() -> None:
    """Database schema."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Apply migrations (Alembic) to WB_DATABASE_URL."""
    from worker.storage import migrate

    async def go(services: Services) -> str | None:
        await migrate.upgrade(services.engine, revision)
        return await migrate.current_revision(services.engine)

    click.echo(f"database at revision {with_services(get_settings(), go)}")
