"""HTML of what regeneration cost (the overview's spend section and the profile page's
usage line). Same rules as ``worker.web.pages``: every value through ``esc``."""

from __future__ import annotations

from worker.domain.cost import Spend, SpendTotals
from worker.services.spend import SpendReport
from worker.web.humanize import usd
from worker.web.pages import esc


def _cells(totals: SpendTotals | None) -> str:
    t = totals or SpendTotals()
    return (
        f"<td>{t.results:,}</td><td>{esc(usd(t.cost_usd))}</td>"
        f"<td>{t.input_tokens:,} / {t.output_tokens:,}</td>"
    )


def _rows(hour: Spend, day: Spend) -> str:
    keys = sorted(day.by_key.keys() | hour.by_key.keys())
    return "".join(
        f'<tr><th scope="row">{esc(lane)}</th><td>{esc(reason)}</td>'
        f"{_cells(hour.by_key.get((lane, reason)))}{_cells(day.by_key.get((lane, reason)))}</tr>"
        for lane, reason in keys
    )


def spend_section(report: SpendReport) -> str:
    """Spend and tokens over the last hour and day by lane and reason, the UTC day so far
    (what the daily cap counts) and the average cost of a regeneration."""
    today, day = report.today.total(), report.day.total()
    head = (
        '<tr><th scope="col">lane</th><th scope="col">reason</th>'
        '<th scope="col">results 1 h</th><th scope="col">cost 1 h</th>'
        '<th scope="col">tokens in / out 1 h</th><th scope="col">results 24 h</th>'
        '<th scope="col">cost 24 h</th><th scope="col">tokens in / out 24 h</th></tr>'
    )
    total = f'<tr><th scope="row">all</th><td></td>{_cells(report.hour.total())}{_cells(day)}</tr>'
    return (
        '<section aria-labelledby="h-spend"><h2 id="h-spend">Spend</h2>'
        f'<p>Today (UTC): <strong id="spend-today">{esc(usd(today.cost_usd))}</strong> over '
        f"{today.results:,} results; a regeneration cost "
        f'<strong id="spend-average">{esc(usd(day.average_cost_usd))}</strong> on average '
        "over the last 24 hours (results that reported usage). Booked to the lane and "
        "reason of the request each result answered.</p>"
        f"<div class=scroll><table>{head}{_rows(report.hour, report.day)}{total}</table></div>"
        "</section>"
    )
