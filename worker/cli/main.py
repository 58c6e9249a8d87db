"""The ``wb`` command: run the worker, migrate, and operate on profiles by hand.

One module per command group (``run``, ``db``, ``signal_profile``, ``dlq``, ``admin``,
``topic``); this one gathers them and turns every failure into its line. Errors are one
line on stderr and a non-zero exit (2: bad usage, 1: refused or failed), so scripts and
on-call engineers can rely on both.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

import click
from pydantic import ValidationError

from worker.cli.admin import admin
from worker.cli.common import CliError
from worker.cli.db import db
from worker.cli.dlq import dlq
from worker.cli.params import first_bad_argument
from worker.cli.run import run
from worker.cli.signal_profile import signal_profile
from worker.cli.topic import topic
from worker.domain.errors import StoreError

_SCHEMA_MISSING = re.compile(r"no such table|relation .* does not exist|UndefinedTable")


@click.group()
def cli() -> None:
    """wb-highlights: profile highlights that stay stored, fresh and trustworthy."""


for _command in (run, db, signal_profile, dlq, admin, topic):
    cli.add_command(_command)


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
