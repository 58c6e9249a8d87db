"""``wb admin``: the admin panel's tokens (``worker.services.auth``)."""

from __future__ import annotations

import click

from worker.cli.common import CliError, with_services
from worker.domain.ids import MAX_BIGINT
from worker.settings import get_settings


@click.group()
def admin() -> None:
    """Admin panel tokens."""


@admin.command("create-token")
@click.option("--actor", required=True, help="Who will use it (shown in the audit log).")
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True)
def create_token(actor: str, role: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    token, row = with_services(get_settings(), lambda s: s.tokens().create(actor, role))
    click.echo(token)
    click.echo(f"token {row.id} for {row.actor} ({row.role}); it is not shown again", err=True)


@admin.command("list-tokens")
def list_tokens() -> None:
    """Tokens: id, actor, role, created, revoked."""
    rows = with_services(get_settings(), lambda s: s.tokens().list())
    for r in rows:
        state = f"revoked {r.revoked_at.isoformat()}" if r.revoked_at else "active"
        click.echo(f"{r.id}\t{r.actor}\t{r.role}\t{r.created_at.isoformat()}\t{state}")


@admin.command("revoke-token")
@click.argument("token_id", type=click.IntRange(1, MAX_BIGINT))
def revoke_token(token_id: int) -> None:
    """Revoke a token; its sessions stop working at once."""
    if not with_services(get_settings(), lambda s: s.tokens().revoke(token_id)):
        raise CliError(f"no active token {token_id}")
    click.echo(f"token {token_id} revoked")
