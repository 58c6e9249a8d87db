"""User ids: the one bound every layer checks against.

Ids are PostgreSQL ``bigint`` primary keys, so a user id is a positive integer below 2^63;
the topics, the HTTP views, the CLI and the store all take the bound from here.
"""

from __future__ import annotations

MAX_BIGINT = 2**63 - 1  # ids stored as PostgreSQL bigint
MAX_USER_ID = MAX_BIGINT
MAX_USER_ID_DIGITS = len(str(MAX_USER_ID))


def is_user_id(value: object) -> bool:
    """True for an int (not a bool) in 1..MAX_USER_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_USER_ID


def user_id_from_text(raw: str) -> int | None:
    """The id an ASCII decimal string names, or None: parsing costs at most 19 digits."""
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_USER_ID_DIGITS:
        value = int(raw)
        return value if is_user_id(value) else None
    return None
