"""Times and durations as people read them: "3 min ago", "2 h 5 min", "2 d".

Pure functions (no database, no HTTP); the panel shows every time as a relative age with
the exact UTC time beside it (``utc_text``, in a ``title``), and every duration this way.
Values are truncated, never rounded up: "59 s" is not yet "1 min".
"""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE, HOUR, DAY = 60, 3600, 86400
# Below these, the next smaller unit is shown too ("2 h 5 min", "3 d 4 h").
TWO_UNITS_BELOW = {HOUR: 10 * HOUR, DAY: 10 * DAY}


def duration(seconds: float | None) -> str:
    """A duration in the largest unit that fits, and the next one while it matters."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)} ms" if seconds > 0 else "0 s"
    whole = int(seconds)
    if whole < MINUTE:
        return f"{whole} s"
    if whole < HOUR:
        return f"{whole // MINUTE} min"
    unit, small, small_name = (HOUR, MINUTE, "min") if whole < DAY else (DAY, HOUR, "h")
    big = whole // unit
    text = f"{big} {'h' if unit == HOUR else 'd'}"
    rest = (whole % unit) // small
    if rest and whole < TWO_UNITS_BELOW[unit]:
        text += f" {rest} {small_name}"
    return text


def ago(then: datetime | None, now: datetime) -> str:
    """How long ago ``then`` was ("3 min ago"), or how far ahead ("in 2 d")."""
    if then is None:
        return "-"
    seconds = (now - then).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    if seconds < 0:
        return f"in {duration(-seconds)}"
    return f"{duration(seconds)} ago"


def utc_text(moment: datetime | None) -> str:
    """The exact time, in UTC, to the second: "2026-01-01 12:00:05 UTC"."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(value: datetime | str | None) -> datetime | None:
    """A datetime from a document's ISO 8601 text (services hand times over as text)."""
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def share(part: int, whole: int) -> str:
    """A share as a percentage with one decimal ("12.5 %"); "-" of nothing."""
    return f"{100 * part / whole:.1f} %" if whole else "-"


def usd(value: float | None) -> str:
    """Dollars with cents, or with four decimals below a dollar (one generation's cost)."""
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"
