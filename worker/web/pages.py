"""HTML of the admin panel. Every value that reaches a page goes through ``esc``: bios and
overrides are LLM or human text and are treated as hostile. No scripts, no inline styles
(the Content-Security-Policy forbids both)."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from worker.domain.values import utcnow
from worker.services.auth import Principal
from worker.web.humanize import ago, duration, parse_time, usd, utc_text


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(value: datetime | str | None, now: datetime) -> str:
    """A time as a relative age, the exact UTC time in its ``title`` (HTML)."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return (
        f'<time datetime="{esc(moment.isoformat())}" title="{esc(utc_text(moment))}">'
        f"{esc(ago(moment, now))}</time>"
    )


def since(value: datetime | str | None, now: datetime) -> str:
    """How long ago, as a duration ("3 h"), the exact UTC start in its ``title`` (HTML)."""
    moment = parse_time(value)
    if moment is None:
        return "-"
    return (
        f'<time datetime="{esc(moment.isoformat())}" title="since {esc(utc_text(moment))}">'
        f"{esc(duration((now - moment).total_seconds()))}</time>"
    )


def page(title: str, body: str, principal: Principal | None = None, csrf: str = "") -> str:
    who = ""
    if principal is not None:
        who = (
            f'<span class="who">{esc(principal.actor)} ({esc(principal.role.value)})</span>'
            f'<form class="inline" method="post" action="/admin/logout">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<button type="submit">Log out</button></form>'
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · wb-highlights</title>"
        '<link rel="stylesheet" href="/admin/static/admin.css">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head><body>'
        '<header><strong>wb-highlights admin</strong><nav aria-label="Panel">'
        '<a href="/admin/">Overview</a> <a href="/admin/profiles">Profiles</a></nav>'
        f"{who}</header><main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def login_page(csrf: str, error: str | None = None, next_url: str = "/admin/") -> str:
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f"<section>{message}<form method=post action=/admin/login>"
        f'<input type="hidden" name="next" value="{esc(next_url)}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<label>Token <input type="password" name="token" autocomplete="off" required></label> '
        '<button type="submit">Log in</button></form>'
        "<p>Tokens come from <code>wb admin create-token</code>.</p></section>"
    )
    return page("Log in", body)


def message_page(title: str, text: str, principal: Principal | None = None, csrf: str = "") -> str:
    return page(title, f"<section><p>{esc(text)}</p></section>", principal, csrf)


class Html(str):
    """Markup already built from escaped values (``when``): ``_rows`` keeps it as is."""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return (
        "<table class=kv>"
        + "".join(
            f'<tr><th scope="row">{esc(k)}</th><td>{v if isinstance(v, Html) else esc(v)}</td></tr>'
            for k, v in pairs
        )
        + "</table>"
    )


def _item(item: Any) -> str:
    """A list item; an attributed quote shows its text and the comment it quotes."""
    if isinstance(item, dict) and "text" in item:
        return f"{esc(item['text'])} <small>(comment {esc(item.get('comment_id'))})</small>"
    return str(esc(item))


def _list(items: list[Any]) -> str:
    return (
        "<ul>" + "".join(f"<li>{_item(i)}</li>" for i in items) + "</ul>" if items else "<p>-</p>"
    )


def _diff(diff: dict[str, Any]) -> str:
    return "; ".join(
        f"{esc(k)}: {esc(v.get('old'))} → {esc(v.get('new'))}" for k, v in diff.items()
    )


def _audit(entries: list[dict[str, Any]], now: datetime) -> str:
    if not entries:
        return "<p>No changes recorded.</p>"
    rows = "".join(
        f"<tr><td>{when(e['at'], now)}</td><td>{esc(e['actor'])}</td><td>{esc(e['action'])}</td>"
        f"<td>{esc(e['reason'] or '')}</td><td>{_diff(e['diff'])}</td></tr>"
        for e in entries
    )
    return (
        '<div class=scroll><table class=audit><tr><th scope="col">when</th>'
        '<th scope="col">who</th><th scope="col">action</th><th scope="col">reason</th>'
        f'<th scope="col">changes</th></tr>{rows}</table></div>'
    )


def _form(user_id: int, action: str, label: str, csrf: str, fields: str = "") -> str:
    return (
        f'<form class="inline" method="post" action="/admin/profiles/{user_id}/{action}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">{fields}'
        f'<button type="submit" name="do" value="{esc(action)}">{esc(label)}</button></form>'
    )


def _controls(user_id: int, doc: dict[str, Any], principal: Principal, csrf: str) -> str:
    if not principal.may_act:
        return "<section><h2>Actions</h2><p>Your role (viewer) may look, not act.</p></section>"
    note = '<label>Note <input name="note" placeholder="why (optional)"></label>'
    highlight = doc["highlight"]
    parts = [_form(user_id, "regenerate", "Regenerate", csrf, note)]
    if highlight is not None:
        parts.append(
            _form(
                user_id,
                "mark-stale",
                "Mark stale",
                csrf,
                '<label>Reason <input name="reason" required></label>',
            )
        )
    parts.append(
        _form(
            user_id,
            "override",
            "Lock override",
            csrf,
            '<label>Text to serve <textarea name="text" required></textarea></label>' + note,
        )
    )
    if highlight is not None and highlight["manual_override"]:
        parts.append(_form(user_id, "clear-override", "Unlock override", csrf, note))
    return f"<section><h2>Actions</h2><div class=controls>{''.join(parts)}</div></section>"


_WHY = {
    "fresh": "the highlight is fresh",
    "overridden": "a manual override is locked",
    "missing": "no highlight has been generated yet",
    "stale": "stale ({reason}): showing Signal activity instead",
    "expired": "past stale_after: showing Signal activity instead",
}


def _served_section(served: dict[str, Any], activity: dict[str, Any], now: datetime) -> str:
    """What a client is shown right now, and why."""
    status = served["status"]
    shown = served.get("text") if served["display"] == "highlight" else None
    why = _WHY[status].format(reason=served["stale_reason"])
    return (
        f'<section><h2>Served now</h2><p><span class="badge {esc(status)}" id="status">'
        f"{esc(status)}</span> {esc(why)}</p>"
        + (
            f'<p class="served" id="served-text">{esc(shown)}</p>'
            if shown is not None
            else f"<p>Snapshot stats: {esc(activity['comment_count'])} comments, latest "
            f"{when(activity['latest_comment_at'], now)}</p>"
        )
        + "</section>"
    )


def _queue(queue: dict[str, Any] | None) -> str:
    """The user's request waiting in the scheduler's queue, in one line."""
    if not queue:
        return "none"
    return (
        f"{queue['priority_name']} (priority {queue['priority']}), place {queue['place']}, "
        f"due {queue['due_at']}, {queue['unseen_comments']} unseen comments"
    )


def _snapshot(version: int | None, fingerprint: str | None) -> str:
    """An input snapshot (``worker.domain.snapshot``) as operators compare them."""
    if version is None and fingerprint is None:
        return "unknown"
    return f"version {'?' if version is None else version}, fingerprint {fingerprint or '?'}"


def _usage(h: dict[str, Any]) -> str:
    """What the stored highlight's generation used, as its result reported."""
    tokens_in, tokens_out, cost = (
        h["usage_input_tokens"],
        h["usage_output_tokens"],
        h["usage_cost_usd"],
    )
    if tokens_in is None and tokens_out is None and cost is None:
        return "not reported"

    def count(n: int | None) -> str:
        return "?" if n is None else f"{n:,}"

    return f"{count(tokens_in)} tokens in, {count(tokens_out)} out, {usd(cost)}"


def _lane(h: dict[str, Any]) -> str:
    lane, reason = h["regen_request_lane"], h["regen_request_reason"]
    return f"{lane}, {reason}" if lane else "-"


def _highlight_sections(doc: dict[str, Any], now: datetime) -> str:
    """The stored row: content, provenance, freshness and override."""
    h, status = doc["highlight"], doc["served"]["status"]
    if h is None:
        return (
            "<section><h2>No highlight yet</h2><p>This user has no highlight "
            "row. Request a first generation:</p></section>"
        )
    provenance = [
        ("source_group", h["source_group"]),
        ("snapshot_hash", h["snapshot_hash"]),
        ("llm_model", h["llm_model"]),
        ("generated_at", Html(when(h["generated_at"], now))),
        ("stale_after", Html(when(h["stale_after"], now))),
        ("generation", h["generation"]),
        ("usage", _usage(h)),
    ]
    freshness = [
        ("status", status),
        ("stale", h["is_stale"]),
        ("reason", h["stale_reason"]),
        ("stale for", Html(since(h["stale_since"], now))),
        ("pending regeneration", h["regen_request_id"] or "none"),
        ("its lane and reason", _lane(h)),
        ("pending for", duration(doc["pending_regeneration_age_s"])),
        ("attempts", h["regen_attempts"]),
        ("queued request", _queue(doc.get("regen_queue"))),
        ("inputs", _snapshot(h["input_version"], h["input_fingerprint"])),
        ("highlight covers", _snapshot(h["covered_version"], h["covered_fingerprint"])),
        ("last skipped (inputs unchanged)", Html(when(h["regen_skipped_at"], now))),
    ]
    override = [
        ("locked", h["manual_override"]),
        ("text", h["override_text"]),
        ("by", h["override_actor"]),
        ("since", Html(when(h["override_set_at"], now))),
    ]
    return (
        f"<section><h2>Auto highlight</h2><p class=served>{esc(h['bio_text'] or '-')}</p>"
        f"<h3>Proof points</h3>{_list(h['proof_points'])}<h3>Quotes</h3>{_list(h['quotes'])}"
        f"</section><section><h2>Provenance</h2>{_rows(provenance)}</section>"
        f"<section><h2>Freshness</h2>{_rows(freshness)}</section>"
        f"<section><h2>Override</h2>{_rows(override)}</section>"
    )


def glaze_page(
    doc: dict[str, Any],
    principal: Principal,
    csrf: str,
    error: str | None = None,
    now: datetime | None = None,
) -> str:
    """The glaze page (the seed's name for the page of one profile): the profile document
    ``services.documents.profile_document`` rendered, with the actions ``principal`` may take."""
    now = now or utcnow()
    user_id, activity = doc["user_id"], doc["signal_activity"]
    message = f'<section class="error">{esc(error)}</section>' if error else ""
    signal = [
        ("comments", activity["comment_count"]),
        ("latest comment", Html(when(activity["latest_comment_at"], now))),
    ]
    body = (
        _served_section(doc["served"], activity, now)
        + _highlight_sections(doc, now)
        + f"<section><h2>Signal activity</h2>{_rows(signal)}</section>"
        + _controls(user_id, doc, principal, csrf)
        + f"<section><h2>Audit log</h2>{_audit(doc['audit'], now)}</section>"
    )
    return page(f"Profile {user_id}", message + body, principal, csrf)
