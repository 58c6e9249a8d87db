"""The checks on what an operator types (CLI, admin panel, tokens): a user id, an actor's
name, an override's text. Bad input is ``InvalidInput`` (one line at the CLI, a 4xx on
HTTP) before any transaction starts, so nothing half-done is ever rolled back for it."""

from __future__ import annotations

from worker.domain.errors import InvalidInput
from worker.domain.ids import is_user_id
from worker.domain.values import MAX_OVERRIDE_CHARS, valid_text


def check_user_id(user_id: int) -> None:
    if not is_user_id(user_id):
        raise InvalidInput(f"user_id must be a positive 64-bit integer, got {user_id!r}")


def check_actor(actor: str) -> str:
    actor = (actor or "").strip()
    if not actor or len(actor) > 200:
        raise InvalidInput("actor must be 1-200 characters")
    if not valid_text(actor):
        raise InvalidInput("actor must be UTF-8 text without NUL")
    return actor


def check_override_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("override text must not be empty")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise InvalidInput(f"override text is longer than {MAX_OVERRIDE_CHARS} characters")
    if not valid_text(text):
        raise InvalidInput("override text must be UTF-8 text without NUL")
    return text.strip()
