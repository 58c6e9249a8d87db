"""Coverage-guided fuzzing of the HTTP boundary with atheris (libFuzzer):

    python tests/fuzz/fuzz_http.py -max_total_time=30 tests/fuzz/corpus/http

An input is split on NUL into a user-id path segment, a cookie, a bearer token, a CSRF
field, a content type and a body. The invariant is the boundary's contract: parsing a path,
reading a form or a JSON body, checking a signature or a CSRF token either succeeds with
valid text or refuses with a 4xx ``Refused``; nothing else may escape (a 500), and no
refusal is a 5xx. Fuzz a copy of the corpus: libFuzzer adds what it finds to it.
"""

from __future__ import annotations

import asyncio
import sys
from unittest.mock import Mock

import aiohttp  # noqa: F401  (uninstrumented: only our code gives feedback)
import atheris
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

with atheris.instrument_imports(include=["worker"]):
    from worker.services.auth import Signer
    from worker.web.requests import parse_user_id, read_form, read_json, text_field, valid_text
    from worker.web.responses import Refused

SIGNER = Signer(b"k" * 32)
FIELDS = 6
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


def check(data: bytes) -> None:
    parts = (data.split(b"\x00", FIELDS - 1) + [b""] * FIELDS)[:FIELDS]
    user, cookie, token, csrf, content_type, body = parts
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
    LOOP.run_until_complete(_bodies(content_type[:100].decode("latin-1"), body))


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
