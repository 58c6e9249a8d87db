"""What ``wb`` takes from its command line, checked before anything reaches a database.

Every refusal here is bad usage (one line, exit 2): an argument that is not text, a user
id the store could not hold, a number that is not finite, a duration ``WB_*`` would not
take. The rules themselves live elsewhere (``valid_text`` and ``user_id_from_text`` in the
domain, ``Duration`` in the settings); this module only applies them to argv.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from worker.domain.ids import MAX_USER_ID, user_id_from_text
from worker.domain.values import valid_text
from worker.settings import Duration


def first_bad_argument(args: Sequence[str]) -> str | None:
    """The first argument that is not text, shown as the bytes it was (on one line); None
    if all are. Python hands invalid UTF-8 in argv over as lone surrogates, which would only
    fail later, in a driver or the audit diff's JSON."""
    for arg in args:
        if not valid_text(arg):
            try:
                raw = arg.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a surrogate no byte escapes to (a caller's str)
                raw = arg.encode("utf-8", "backslashreplace")
            return repr(raw[:80])
    return None


def user_ids(_ctx: Any, _param: Any, value: str | None) -> list[int] | None:
    """``--users``: comma-separated user ids, each 1..2^63-1 (what the store holds)."""
    if value is None:
        return None
    ids = []
    for part in value.split(","):
        uid = user_id_from_text(part.strip())
        if uid is None:
            raise click.BadParameter(
                f"takes comma-separated user ids from 1 to {MAX_USER_ID}, got {part.strip()!r}"
            )
        ids.append(uid)
    return ids


def duration(_ctx: Any, _param: Any, value: str | None) -> timedelta | None:
    """A duration flag: whatever a ``WB_*`` duration takes (``90``, ``15m``, ``PT15M``)."""
    if value is None:
        return None
    try:
        return TypeAdapter(Duration).validate_python(value)
    except ValidationError:
        raise click.BadParameter(
            f"{value!r} is not a duration like 90s, 15m, 6h, 2d or PT15M"
        ) from None


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` (which no bound comparison catches)
    and infinities."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
