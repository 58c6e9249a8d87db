"""HTML of the operator's overview, the profile list and the bulk confirmation. Same rules
as ``worker.web.pages``: every value through ``esc``, no script, no style attribute; charts
are inline SVG with presentation attributes (``worker.web.charts``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from worker.domain.freshness import FreshnessState
from worker.domain.values import StaleReason
from worker.services.auth import Principal
from worker.services.cost_preview import CostPreview
from worker.services.overview import STATES, Overview
from worker.services.profile_list import BulkJob, ProfileFilter, ProfilePage, ProfileQuery, Sort
from worker.web.charts import Point, data_table, line_chart, peaks
from worker.web.humanize import duration, share
from worker.web.pages import esc, page, since, when
from worker.web.spend_pages import spend_section

CHART_STEP = timedelta(minutes=15)
TABLE_STEP = timedelta(hours=1)
OPTIONAL = ' class="optional"'  # columns a phone leaves out (admin.css)


def _error(error: str | None) -> str:
    return f'<p class="error" role="alert">{esc(error)}</p>' if error else ""


def _state_table(ov: Overview) -> str:
    f = ov.figures
    rows = "".join(
        f'<tr><th scope="row"><span class="badge {esc(s)}">{esc(s)}</span></th>'
        f'<td id="count-{esc(s)}">{f.counts[s]:,}</td><td>{esc(share(f.counts[s], f.total))}</td>'
        f'<td><a href="/admin/profiles?{urlencode({"state": s})}">list</a></td></tr>'
        for s in STATES
    )
    return (
        '<section aria-labelledby="h-states"><h2 id="h-states">Freshness now</h2>'
        '<div class=scroll><table><tr><th scope="col">state</th><th scope="col">profiles</th>'
        f'<th scope="col">share</th><th scope="col"><span class=sr-only>link</span></th></tr>'
        f'{rows}<tr><th scope="row">all</th><td id="count-total">{f.total:,}</td>'
        f"<td>stale share {esc(share(f.stale, f.total))}</td><td></td></tr></table></div></section>"
    )


def _regeneration(ov: Overview) -> str:
    f = ov.figures
    windows = "".join(
        f'<tr><th scope="row">{esc(t.window)}</th><td>{t.count:,}</td>'
        f"<td>{esc(duration(t.percentiles[0.5]))}</td><td>{esc(duration(t.percentiles[0.99]))}</td></tr>"
        for t in ov.time_to_fresh
    )
    return (
        '<section aria-labelledby="h-regen"><h2 id="h-regen">Regeneration</h2>'
        f'<p><strong id="pending">{f.pending:,}</strong> requests pending; the oldest has waited '
        f"{since(f.oldest_pending_at, ov.now) if f.oldest_pending_at else 'nothing'}.</p>"
        "<h3>Time to fresh</h3><p>From the stale mark to the result that made the row "
        'fresh again.</p><div class=scroll><table><tr><th scope="col">window</th>'
        '<th scope="col">rows made fresh</th><th scope="col">p50</th><th scope="col">p99</th>'
        f"</tr>{windows}</table></div></section>"
    )


def _oldest_stale(ov: Overview) -> str:
    if not ov.oldest_stale:
        return (
            '<section aria-labelledby="h-oldest"><h2 id="h-oldest">Oldest stale</h2>'
            "<p>No stale profiles.</p></section>"
        )
    rows = "".join(
        f'<tr><td><a href="/admin/profiles/{p.user_id}/glaze">{p.user_id}</a></td>'
        f'<td><span class="badge {esc(p.state)}">{esc(p.state)}</span></td>'
        f"<td>{esc(p.stale_reason or '-')}</td><td>{since(p.stale_since, ov.now)}</td></tr>"
        for p in ov.oldest_stale
    )
    return (
        '<section aria-labelledby="h-oldest"><h2 id="h-oldest">Oldest stale</h2>'
        '<div class=scroll><table><tr><th scope="col">user</th><th scope="col">state</th>'
        '<th scope="col">reason</th><th scope="col">stale for</th></tr>'
        f'{rows}</table></div><p><a href="/admin/profiles?sort=staleness">All, stalest first</a>'
        "</p></section>"
    )


def _dead_letters(ov: Overview) -> str:
    rows = "".join(
        f'<tr><th scope="row">{esc(stream)}</th><td id="dlq-{esc(stream)}">{n:,}</td></tr>'
        for stream, n in ov.dead_letters.items()
    )
    return (
        '<section aria-labelledby="h-dlq"><h2 id="h-dlq">Dead letters in the last hour</h2>'
        '<table><tr><th scope="col">stream</th><th scope="col">dead letters</th></tr>'
        f"{rows}</table></section>"
    )


def _charts(ov: Overview) -> str:
    start, end = ov.now - timedelta(hours=24), ov.now
    shares = [Point(s.at, 100 * s.stale_share) for s in ov.samples]
    pending = [Point(s.at, float(s.pending)) for s in ov.samples]

    def pct(v: float) -> str:
        return f"{v:.1f} %"

    def count(v: float) -> str:
        return f"{v:,.0f}"

    return (
        '<section aria-labelledby="h-charts"><h2 id="h-charts">Last 24 hours</h2>'
        "<p>Peak of each 15 minutes, from the gauge timer's samples.</p><div class=charts>"
        + line_chart(
            "chart-stale-share",
            "Stale share",
            peaks(shares, start, end, CHART_STEP),
            start,
            end,
            pct,
        )
        + line_chart(
            "chart-pending",
            "Pending regeneration requests",
            peaks(pending, start, end, CHART_STEP),
            start,
            end,
            count,
        )
        + "</div>"
        + data_table(
            "The same, by hour (peaks)",
            [
                ("stale share", peaks(shares, start, end, TABLE_STEP), pct),
                ("pending", peaks(pending, start, end, TABLE_STEP), count),
            ],
        )
        + "</section>"
    )


def _filter_text(selection: ProfileFilter) -> str:
    parts = [f"{k} = {v}" for k, v in selection.params().items()]
    return ", ".join(parts) if parts else "every profile"


def _jobs(jobs: list[BulkJob], ov: Overview) -> str:
    if not jobs:
        return ""
    rows = "".join(
        f"<tr><td>{j.id}</td><td>{esc(j.actor)}</td><td>{esc(_filter_text(j.filter))}</td>"
        f"<td>{j.result.marked:,} of {j.total:,}</td><td>{when(j.started_at, ov.now)}</td>"
        f"<td>{esc(j.error or ('done' if j.finished_at else 'running'))}</td></tr>"
        for j in jobs
    )
    return (
        '<section aria-labelledby="bulk-jobs"><h2 id="bulk-jobs">Bulk regenerations in this '
        'worker</h2><div class=scroll><table><tr><th scope="col">#</th><th scope="col">by</th>'
        '<th scope="col">selection</th><th scope="col">marked</th><th scope="col">started</th>'
        f'<th scope="col">status</th></tr>{rows}</table></div></section>'
    )


def overview_page(
    ov: Overview, jobs: list[BulkJob], principal: Principal, csrf: str, error: str | None = None
) -> str:
    lookup = (
        f'<section aria-labelledby="h-open"><h2 id="h-open">Open a profile</h2>{_error(error)}'
        '<form method=get action="/admin/"><label>User id <input name="user_id" '
        'inputmode="numeric" required></label> <button type="submit">Open</button></form>'
        "</section>"
    )
    body = (
        f"{lookup}<div class=figures>{_state_table(ov)}{_regeneration(ov)}</div>"
        f"{_charts(ov)}<div class=figures>{_oldest_stale(ov)}{_dead_letters(ov)}</div>"
        f"{spend_section(ov.spend)}{_jobs(jobs, ov)}"
    )
    return page("Overview", body, principal, csrf)


def _select(name: str, label: str, options: list[tuple[str, str]], chosen: str | None) -> str:
    items = "".join(
        f'<option value="{esc(v)}"{" selected" if v == (chosen or "") else ""}>{esc(t)}</option>'
        for v, t in options
    )
    return f'<label>{esc(label)} <select name="{esc(name)}">{items}</select></label>'


def _filter_form(query: ProfileQuery) -> str:
    p = query.filter.params()
    return (
        '<form class="filters" method="get" action="/admin/profiles">'
        + _select(
            "state",
            "State",
            [("", "any"), *((s.value, s.value) for s in FreshnessState)],
            p.get("state"),
        )
        + _select(
            "reason",
            "Stale reason",
            [("", "any"), *((r.value, r.value) for r in StaleReason)],
            p.get("reason"),
        )
        + _select(
            "override",
            "Override",
            [("", "any"), ("locked", "locked"), ("unlocked", "unlocked")],
            p.get("override"),
        )
        + f'<label>Model <input name="model" value="{esc(p.get("model", ""))}"></label>'
        + '<label>Source group <input name="source_group" '
        + f'value="{esc(p.get("source_group", ""))}"></label>'
        + _select(
            "sort",
            "Sort",
            [(Sort.STALENESS.value, "stalest first"), (Sort.CHANGE.value, "recently changed")],
            query.sort.value,
        )
        + '<button type="submit">Apply</button> <a href="/admin/profiles">Clear</a></form>'
    )


def profiles_page(
    query: ProfileQuery, result: ProfilePage, principal: Principal, csrf: str, now: datetime
) -> str:
    rows = "".join(
        f'<tr><td><a href="/admin/profiles/{r["user_id"]}/glaze">{r["user_id"]}</a></td>'
        f'<td><span class="badge {esc(r["state"])}">{esc(r["state"])}</span></td>'
        f"<td>{esc(r['stale_reason'] or '-')}</td><td>{since(r['stale_since'], now)}</td>"
        f"<td>{when(r['updated_at'], now)}</td><td{OPTIONAL}>{esc(r['llm_model'] or '-')}</td>"
        f"<td{OPTIONAL}>{esc(r['source_group'] or '-')}</td>"
        f"<td>{'locked' if r['manual_override'] else '-'}</td></tr>"
        for r in result.rows
    )
    table = (
        '<div class=scroll><table class="list" id="profile-list"><tr>'
        '<th scope="col">user</th><th scope="col">state</th><th scope="col">reason</th>'
        '<th scope="col">stale for</th><th scope="col">changed</th>'
        f'<th scope="col"{OPTIONAL}>model</th><th scope="col"{OPTIONAL}>source group</th>'
        f'<th scope="col">override</th></tr>{rows}</table></div>'
        if result.rows
        else "<p>No profile matches.</p>"
    )
    params = {**query.filter.params(), "sort": query.sort.value}
    pager = []
    if query.cursor is not None:
        pager.append(f'<a href="/admin/profiles?{esc(urlencode(params))}">First page</a>')
    if result.next_cursor:
        more = urlencode({**params, "after": result.next_cursor})
        pager.append(f'<a rel="next" href="/admin/profiles?{esc(more)}">Next page</a>')
    bulk = (
        f'<p><a href="/admin/profiles/bulk?{esc(urlencode(query.filter.params()))}">'
        "Regenerate this selection…</a></p>"
        if principal.may_act
        else "<p>Your role (viewer) may look, not regenerate in bulk.</p>"
    )
    body = (
        f'<section aria-labelledby="h-filter"><h2 id="h-filter">Filter</h2>{_filter_form(query)}'
        f"{bulk}</section>"
        f'<section aria-labelledby="h-list"><h2 id="h-list">{len(result.rows)} shown</h2>'
        f'{table}<nav aria-label="Pages" class=pager>{" ".join(pager)}</nav></section>'
    )
    return page("Profiles", body, principal, csrf)


def bulk_page(
    selection: ProfileFilter,
    cost: CostPreview,
    rate: float,
    principal: Principal,
    csrf: str,
    notice: str | None = None,
) -> str:
    back = f"/admin/profiles?{urlencode(selection.params())}"
    hidden = "".join(
        f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
        for k, v in selection.params().items()
    )
    count = cost.profiles
    summary = (
        f'<p><strong id="bulk-count">{count:,}</strong> profiles with generated content match '
        f"({esc(_filter_text(selection))}).</p>"
        f'<p>Cost preview, from the usage results reported: <strong id="bulk-cost">'
        f"{esc(cost.describe())}</strong>.</p>"
    )
    if count == 0:
        form = f'<p>Nothing to regenerate. <a href="{esc(back)}">Back to the list</a></p>'
    else:
        form = (
            f"<p>Each is marked stale (reason manual) and a regeneration is requested, at most "
            f"{rate:g} per second: about {esc(duration(count / rate))}. Rows with a request "
            "pending keep it (coalesced). Every row is audited to you.</p>"
            '<form method="post" action="/admin/profiles/bulk">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">{hidden}'
            f'<input type="hidden" name="count" value="{count}">'
            '<label>Note <input name="note" placeholder="why (optional)"></label> '
            f'<button type="submit">Regenerate {count:,} profiles</button> '
            f'<a href="{esc(back)}">Cancel</a></form>'
        )
    body = (
        '<section aria-labelledby="h-bulk"><h2 id="h-bulk">Selection</h2>'
        f"{_error(notice)}{summary}{form}</section>"
    )
    return page("Bulk regenerate", body, principal, csrf)
