"""Typed errors of the service layer: each says what was wrong; none leaves a partial write."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the service layer raises on purpose."""


class InvalidInput(StoreError, ValueError):
    """The caller passed something the store refuses (empty text, naive datetime, ...)."""


class UnknownUser(StoreError, LookupError):
    """The operation needs an existing highlight row and there is none."""

    def __init__(self, user_id: int) -> None:
        super().__init__(f"no highlight for user {user_id}")
        self.user_id = user_id


class SnapshotConflict(StoreError):
    """Optimistic lock failed: the row's snapshot hash is no longer the one the generator read."""

    def __init__(self, user_id: int, expected: str | None, actual: str | None) -> None:
        super().__init__(
            f"user {user_id}: result was generated from snapshot {expected!r}, "
            f"row now has {actual!r}"
        )
        self.user_id = user_id
        self.expected = expected
        self.actual = actual


class SupersededResult(StoreError):
    """The result is older than what is stored; newer content is never replaced by older."""

    def __init__(self, user_id: int, detail: str) -> None:
        super().__init__(f"user {user_id}: result superseded: {detail}")
        self.user_id = user_id
