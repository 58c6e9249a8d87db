"""HTML of the admin panel. Every value that reaches a page goes through ``esc``: bios and
overrides are LLM or human text and are treated as hostile. No scripts, no inline styles
(the Content-Security-Policy forbids both)."""

from __future__ import annotations

from html import escape
from typing import Any

from worker.services.auth import Principal


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


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
        '<link rel="stylesheet" href="/admin/static/admin.css"></head><body>'
        f'<header><strong>wb-highlights admin</strong><a href="/admin/">Profiles</a>{who}</header>'
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
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


def _profiles_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>None.</p>"
    body = "".join(
        f'<tr><td><a href="/admin/profiles/{r["user_id"]}/glaze">{r["user_id"]}</a></td>'
        f"<td>{'stale: ' + esc(r['stale_reason']) if r['is_stale'] else 'fresh'}</td>"
        f"<td>{esc(r['stale_since'] or '')}</td><td>{esc(r['updated_at'])}</td>"
        f"<td>{'locked' if r['manual_override'] else ''}</td></tr>"
        for r in rows
    )
    return (
        "<table><tr><th>user</th><th>freshness</th><th>stale since</th><th>changed</th>"
        f"<th>override</th></tr>{body}</table>"
    )


def index_page(
    lists: dict[str, list[dict[str, Any]]],
    principal: Principal,
    csrf: str,
    error: str | None = None,
) -> str:
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    body = (
        f'<section>{message}<form method=get action="/admin/">'
        '<label>User id <input name="user_id" inputmode="numeric" required></label> '
        '<button type="submit">Open</button></form></section>'
        f"<section><h2>Stalest</h2>{_profiles_table(lists['stalest'])}</section>"
        f"<section><h2>Recently changed</h2>{_profiles_table(lists['recent'])}</section>"
    )
    return page("Profiles", body, principal, csrf)


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
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


def _audit(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "<p>No changes recorded.</p>"
    rows = "".join(
        f"<tr><td>{esc(e['at'])}</td><td>{esc(e['actor'])}</td><td>{esc(e['action'])}</td>"
        f"<td>{esc(e['reason'] or '')}</td><td>{_diff(e['diff'])}</td></tr>"
        for e in entries
    )
    return (
        "<table class=audit><tr><th>when</th><th>who</th><th>action</th><th>reason</th>"
        f"<th>changes</th></tr>{rows}</table>"
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
    note = '<input name="note" placeholder="why (optional)">'
    highlight = doc["highlight"]
    parts = [_form(user_id, "regenerate", "Regenerate", csrf, note)]
    if highlight is not None:
        parts.append(
            _form(
                user_id,
                "mark-stale",
                "Mark stale",
                csrf,
                '<input name="reason" placeholder="reason" required>',
            )
        )
    parts.append(
        _form(
            user_id,
            "override",
            "Lock override",
            csrf,
            '<textarea name="text" required placeholder="text to serve"></textarea>' + note,
        )
    )
    if highlight is not None and highlight["manual_override"]:
        parts.append(_form(user_id, "clear-override", "Unlock override", csrf, note))
    return f"<section><h2>Actions</h2><div class=controls>{''.join(parts)}</div></section>"


def glaze_page(
    doc: dict[str, Any], principal: Principal, csrf: str, error: str | None = None
) -> str:
    user_id = doc["user_id"]
    served, h, activity = doc["served"], doc["highlight"], doc["signal_activity"]
    message = f'<section class="error">{esc(error)}</section>' if error else ""
    status = served["status"]
    shown = served.get("text") if served["display"] == "highlight" else None
    why = {
        "fresh": "the highlight is fresh",
        "overridden": "a manual override is locked",
        "missing": "no highlight has been generated yet",
        "stale": f"stale ({served['stale_reason']}): showing Signal activity instead",
        "expired": "past stale_after: showing Signal activity instead",
    }[status]
    served_html = (
        f'<section><h2>Served now</h2><p><span class="badge {esc(status)}" id="status">'
        f"{esc(status)}</span> {esc(why)}</p>"
        + (
            f'<p class="served" id="served-text">{esc(shown)}</p>'
            if shown is not None
            else f"<p>Snapshot stats: {esc(activity['comment_count'])} comments, latest "
            f"{esc(activity['latest_comment_at'] or '-')}</p>"
        )
        + "</section>"
    )
    if h is None:
        body = (
            served_html + "<section><h2>No highlight yet</h2><p>This user has no highlight "
            "row. Request a first generation:</p></section>"
        )
    else:
        body = served_html + (
            f"<section><h2>Auto highlight</h2><p class=served>{esc(h['bio_text'] or '-')}</p>"
            f"<h3>Proof points</h3>{_list(h['proof_points'])}<h3>Quotes</h3>{_list(h['quotes'])}"
            "</section><section><h2>Provenance</h2>"
            + _rows(
                [
                    (k, h[k])
                    for k in (
                        "source_group",
                        "snapshot_hash",
                        "llm_model",
                        "generated_at",
                        "stale_after",
                        "generation",
                    )
                ]
            )
            + "</section><section><h2>Freshness</h2>"
            + _rows(
                [
                    ("status", status),
                    ("stale", h["is_stale"]),
                    ("reason", h["stale_reason"]),
                    ("stale since", h["stale_since"]),
                    ("pending regeneration", h["regen_request_id"] or "none"),
                    ("pending for (s)", doc["pending_regeneration_age_s"]),
                    ("attempts", h["regen_attempts"]),
                ]
            )
            + "</section><section><h2>Override</h2>"
            + _rows(
                [
                    ("locked", h["manual_override"]),
                    ("text", h["override_text"]),
                    ("by", h["override_actor"]),
                    ("since", h["override_set_at"]),
                ]
            )
            + "</section>"
        )
    body += (
        "<section><h2>Signal activity</h2>"
        + _rows(
            [
                ("comments", activity["comment_count"]),
                ("latest comment", activity["latest_comment_at"]),
            ]
        )
        + "</section>"
    )
    body += _controls(user_id, doc, principal, csrf)
    body += f"<section><h2>Audit log</h2>{_audit(doc['audit'])}</section>"
    return page(f"Profile {user_id}", message + body, principal, csrf)
