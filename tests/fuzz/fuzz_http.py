"""Coverage-guided fuzzing of the HTTP boundary with atheris (libFuzzer):

    python tests/fuzz/fuzz_http.py -max_total_time=30 tests/fuzz/corpus/http

An input is split on NUL into a user-id path segment, a cookie, a bearer token, a CSRF
field, a page cursor (``after=``), a login's ``next=``, a content type and a body. The
invariant is the boundary's contract: parsing a path or a cursor, reading a form or a JSON
body, checking a signature or a CSRF token either succeeds with valid text (a cursor: with a
time both databases take, in UTC) or refuses with a 4xx ``Refused`` or ``InvalidInput``;
nothing else may escape (a 500), and no refusal is a 5xx. ``next=`` always yields a panel URL
a ``Location`` header can carry. Fuzz a copy of the corpus: libFuzzer adds what it finds.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from unittest.mock import Mock

import aiohttp  # noqa: F401  (uninstrumented: only our code gives feedback)
import atheris
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

with atheris.instrument_imports(include=["worker"]):
    from worker.domain.errors import InvalidInput
    from worker.domain.ids import MAX_USER_ID
    from worker.domain.values import valid_text
    from worker.services.auth import Signer
    from worker.services.profile_list import ProfileQuery, Sort
    from worker.web.requests import parse_user_id, read_form, read_json, safe_next, text_field
    from worker.web.responses import Refused

SIGNER = Signer(b"k" * 32)
FIELDS = 8
LOOP = asyncio.new_event_loop()


def _text(raw: bytes) -> str:
    """What aiohttp hands a view for header bytes: latin-1 text, surrogates escaped."""
    return raw.decode("utf-8", "surrogateescape")


async def _bodies(content_type: str, body: bytes) -> None:
    headers = CIMultiDict({"Content-Type": content_type or "application/octet-stream"})
    for reader in (read_form, read_json):
        request = make_mocked_request("POST", "/admin/x", headers=headers, payload=_payload(body))
        try:
            data = await reader(request)
        except Refused as exc:
            _check_refusal(exc)
            continue
        for name in list(data)[:5]:
            try:
                value = text_field(data, name)
            except Refused as exc:
                _check_refusal(exc)
                continue
            if value is not None and not valid_text(value):
                raise AssertionError(f"text_field let through {value!r}")


def _payload(body: bytes) -> StreamReader:
    """A real aiohttp body stream holding ``body`` (what a connection would feed)."""
    stream = StreamReader(Mock(_reading_paused=False), 2**16, loop=LOOP)
    stream.feed_data(body)
    stream.feed_eof()
    return stream


def _check_refusal(exc: Refused) -> None:
    if not 400 <= exc.status < 500 or not exc.reason:
        raise AssertionError(f"refusal outside the contract: {exc.status} {exc.reason!r}")


def _cursor(after: str) -> None:
    """A cursor is refused, or names a user id (0: a run's start) and an aware time in UTC
    (what ``UTCDateTime`` and asyncpg send without converting, so never overflow)."""
    for sort in Sort:
        try:
            cursor = ProfileQuery.parse({"after": after, "sort": sort.value}).cursor
        except InvalidInput as exc:
            if not str(exc):
                raise AssertionError("a cursor refused without a reason") from None
            continue
        if cursor is None:
            continue
        if not 0 <= cursor.user_id <= MAX_USER_ID:
            raise AssertionError(f"cursor user id {cursor.user_id} out of bounds")
        if cursor.at is not None and cursor.at.utcoffset() != timedelta(0):
            raise AssertionError(f"cursor time {cursor.at!r} is not in UTC")


def _next(raw: str) -> None:
    url = safe_next(raw)
    if not url.startswith("/admin/") or "\\" in url or not url.isprintable():
        raise AssertionError(f"safe_next let through {url!r}")


def check(data: bytes) -> None:
    parts = (data.split(b"\x00", FIELDS - 1) + [b""] * FIELDS)[:FIELDS]
    user, cookie, token, csrf, after, next_url, content_type, body = parts
    try:
        value = parse_user_id(_text(user))
        if not 0 < value < 2**63:
            raise AssertionError(f"user id {value} out of bounds")
    except Refused as exc:
        _check_refusal(exc)
    SIGNER.unsign(_text(cookie))
    SIGNER.check_csrf(_text(cookie), _text(csrf))
    SIGNER.check_csrf(SIGNER.sign("s"), _text(csrf))
    valid_text(_text(token))
    _cursor(_text(after))
    _next(_text(next_url))
    LOOP.run_until_complete(_bodies(content_type[:100].decode("latin-1"), body))


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
