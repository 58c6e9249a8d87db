"""Reading what a client sent: anything that is not valid text is refused with a 400.

A client can put any bytes in a path, a form or a JSON body. NUL and lone surrogates
(what invalid UTF-8 decodes to) are not text: they would fail later in the database or
the encoder, so they are refused here, at the boundary, with a reason.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from worker.domain.ids import user_id_from_text
from worker.domain.values import valid_text
from worker.web.responses import Refused

MAX_BODY = 64 * 1024
MAX_FIELD_CHARS = 10_000
MAX_QUERY_CHARS = 500
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def parse_user_id(raw: str) -> int:
    value = user_id_from_text(raw)
    if value is None:
        shown = raw[:40].encode("utf-8", "backslashreplace").decode()
        raise Refused(
            400, "bad_user_id", f"user id must be a positive 64-bit integer, got {shown!r}"
        )
    return value


def _check_size(request: web.Request) -> None:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Refused(413, "too_large", f"request body over {MAX_BODY} bytes")


async def read_form(request: web.Request) -> dict[str, str]:
    """The form's text fields; a body that is not a form, or a field that is not text, is
    refused."""
    _check_size(request)
    if request.content_type not in FORM_TYPES:
        raise Refused(415, "unsupported_media_type", "expected a form")
    try:
        form = await request.post()
    except Exception as exc:  # the parser's verdict on bytes a client chose: theirs to fix
        # (aiohttp raises ValueError, UnicodeDecodeError or its own BadHttpMessage on a
        # malformed multipart part, found by tests/fuzz/fuzz_http.py)
        raise Refused(
            400, "bad_form", f"the form could not be read: {type(exc).__name__}"
        ) from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    for name, value in fields.items():
        if not valid_text(name) or not valid_text(value):
            raise Refused(400, "bad_text", "form fields must be UTF-8 text without NUL")
    return fields


async def read_json(request: web.Request) -> dict[str, Any]:
    _check_size(request)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise Refused(413, "too_large", f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise Refused(415, "unsupported_media_type", "send application/json")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise Refused(400, "bad_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "bad_json", "body must be a JSON object")
    return data


def query_fields(request: web.Request) -> dict[str, str]:
    """The query string's fields (the first of each name); text only, short values only."""
    fields: dict[str, str] = {}
    for name, value in request.query.items():
        if not valid_text(name) or not valid_text(value):
            raise Refused(400, "bad_text", "query fields must be UTF-8 text without NUL")
        if len(value) > MAX_QUERY_CHARS:
            raise Refused(400, "bad_field", f"{name[:40]} is too long")
        fields.setdefault(name, value)
    return fields


def count_field(data: dict[str, str], name: str) -> int:
    raw = data.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise Refused(400, "bad_field", f"{name} must be a non-negative integer")
    return int(raw)


def text_field(data: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise Refused(400, "missing_field", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise Refused(400, "bad_field", f"{name} must be a string")
    if len(value) > MAX_FIELD_CHARS:
        raise Refused(400, "bad_field", f"{name} is too long")
    if not valid_text(value):
        raise Refused(400, "bad_text", f"{name} must be UTF-8 text without NUL")
    return value


def safe_next(url: str | None) -> str:
    """Only redirect within the panel (no open redirect to another site), and only to a
    URL that fits in a ``Location`` header: a control character (CR/LF above all) would make
    aiohttp refuse the response after the login already opened a session, so anything
    that is not printable text falls back to the overview."""
    if url and url.startswith("/admin/") and "\\" not in url and url.isprintable():
        return url  # printable: no control character, NUL or lone surrogate
    return "/admin/"
