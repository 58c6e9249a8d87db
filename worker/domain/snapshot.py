"""Input snapshots: what a user's highlight is generated from, as the worker received it.

Per user the worker keeps the *live input set*: each comment it heard of, with its current
version, or a tombstone once deleted (``worker.services.snapshots`` stores them, one
``comment_inputs`` row each). From it come two values on the user's row:

- ``input_version``: +1 for every accepted change of the set. An event that changes
  nothing (a redelivery, an edit older than the version held, anything about a deleted
  comment) is not a change and bumps nothing.
- ``input_fingerprint``: the sum modulo 2^64 of ``element(comment_id, version)`` over the
  live comments (BLAKE2b, 64 bits). A sum is order-independent and incremental: a create
  adds the element, an edit subtracts the old one and adds the new, a deletion subtracts.
  So the same live set gives the same fingerprint whatever order and how often its events
  came, and a create deleted again leaves the fingerprint where it was.

A comment's *version* is the event that set its current content: the greatest
``(occurred_at, event_id)`` among its created/edited events. Comment events carry no
content, and one comment's events all come from Signal's one clock, so ``occurred_at``
orders them as the activity record already does; nothing else compares it with our
clock or a generator's. A deletion is final (a later create or edit of the same comment
is a late redelivery, not a resurrection).

Fingerprints are stored as signed 64-bit integers (BIGINT, SQLite's INTEGER) and
published as 16 hex digits (``wire``): JSON numbers past 2^53 are not safe everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from hashlib import blake2b
from typing import NamedTuple

from worker.domain.values import StaleReason

MODULUS = 1 << 64
# Why a due regeneration was not published (``wb_regen_skipped_total``'s label, a scan's
# action): the stored highlight covers exactly the current inputs.
UNCHANGED = "unchanged"
_SIGN = 1 << 63


def signed(value: int) -> int:
    """``value`` modulo 2^64 in BIGINT's range (one expression: it runs per comment)."""
    return (value + _SIGN) % MODULUS - _SIGN


# BLAKE2b with 8-byte digests, ready to copy: copying a prepared hash costs less than
# making one with its parameters (one or two per comment on the hot path).
_BLAKE2B_64 = blake2b(digest_size=8)


def element(comment_id: str, version: str) -> int:
    """One live comment's share of the fingerprint (the NUL cannot occur in an id)."""
    hashed = _BLAKE2B_64.copy()
    hashed.update(f"{comment_id}\x00{version}".encode())
    return int.from_bytes(hashed.digest(), "big")


def baseline(comment_count: int, last_comment_id: str | None, last_at: datetime | None) -> int:
    """The fingerprint of the comments recorded before snapshots were kept (revision 0011):
    only their activity summary is known, so it stands for them as one opaque element."""
    at = last_at.isoformat() if last_at is not None else ""
    return signed(element(f"activity:{comment_count}", f"{last_comment_id or ''}\x00{at}"))


def wire(fingerprint: int) -> str:
    """The fingerprint as requests carry it: 16 lower-case hex digits."""
    return f"{fingerprint % MODULUS:016x}"


class CommentInput(NamedTuple):
    """One comment of the live input set: its version, or a tombstone (``deleted``). Tuples,
    not frozen dataclasses: one is made per comment on the hot path."""

    version_at: datetime | None
    version_event: str | None
    deleted: bool = False


TOMBSTONE = CommentInput(None, None, deleted=True)
# An accepted change: the comment's new state and the fingerprint's delta. A plain tuple,
# not a named one: one per comment, and building a named tuple costs as much as the rest
# of the bookkeeping (docs/performance.md, 2026-12-06).
Change = tuple[CommentInput, int]
_DELETED = "comment.deleted"


def step(
    current: CommentInput | None, kind: str, at: datetime, event_id: str, comment_id: str
) -> Change | None:
    """What a comment event does to its comment's state; None when it changes nothing.
    A comment not seen before (the common case) costs one element; replacing a version
    costs two, and only once the new one is known to be later."""
    if current is not None:
        if current.deleted or current.version_event == event_id:  # final; the same again
            return None
        if current.version_event is not None:
            assert current.version_at is not None
            if kind != _DELETED and (at, event_id) <= (current.version_at, current.version_event):
                return None  # an older version
            old = element(comment_id, current.version_event)
            if kind == _DELETED:
                return TOMBSTONE, -old
            return CommentInput(at, event_id), element(comment_id, event_id) - old
    if kind == _DELETED:
        return TOMBSTONE, 0
    return CommentInput(at, event_id), element(comment_id, event_id)


# Marks a regeneration may be skipped for: changes of the inputs, and nothing else (an
# expiry, an operator's request, a first generation always go out).
_INPUT_REASONS = frozenset(
    {StaleReason.NEW_COMMENT, StaleReason.COMMENT_EDITED, StaleReason.COMMENT_DELETED}
)


def input_driven(reason: str, trigger: str | None) -> bool:
    """True for a stale mark only the inputs caused (so unchanged inputs may answer it).
    ``reason`` is a ``StaleReason`` or the ``RegenReason`` of the same value (a mark's: both
    are str enums, equal to their values), so a mark is judged without making an enum."""
    return reason in _INPUT_REASONS and not (trigger or "").startswith("operator:")


def unchanged(
    covered_fingerprint: int | None,
    input_fingerprint: int,
    has_content: bool,
    stale_after: datetime | None,
    now: datetime,
) -> bool:
    """A due request buys nothing: the stored highlight covers exactly the current inputs.
    ``covered_fingerprint`` is None when unknown (a generator that does not echo) and after
    any mark that is not ``input_driven``, so expiry and operators are never skipped; a
    missing or expired highlight is not skipped either."""
    expired = stale_after is not None and stale_after <= now
    return (
        has_content
        and not expired
        and covered_fingerprint is not None
        and covered_fingerprint == input_fingerprint
    )


def supersedes(
    echo: int | None,
    covered_version: int | None,
    candidate: tuple[datetime, str],
    stored: tuple[datetime, str],
) -> bool:
    """Whether a result is newer than the stored one: by the input versions they cover
    when both are known, ``(generated_at, snapshot_hash)`` otherwise and as the tiebreak
    (a generator's clock only decides between results of the same inputs)."""
    if echo is not None and covered_version is not None and echo != covered_version:
        return echo > covered_version
    return candidate > stored


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a stored result covers, and whether the row's inputs moved on since."""

    version: int | None
    fingerprint: int | None
    behind: bool


def coverage(echo: int | None, input_version: int, input_fingerprint: int) -> Coverage:
    """A result echoing ``input_version`` covers the changes up to it: the current
    fingerprint when it is the current version, an unknown one when older (the row stays
    stale, ``behind``). No echo, or one ahead of the row (a restored database): unknown,
    and the timestamp rule decides as before snapshots."""
    if echo is None or echo > input_version:
        return Coverage(None, None, False)
    if echo == input_version:
        return Coverage(echo, input_fingerprint, False)
    return Coverage(echo, None, True)


def behind_inputs(covered_version: int | None, input_version: int) -> bool | None:
    """For the scans: whether the stored highlight misses accepted changes; None when its
    coverage is unknown (then recorded activity against ``generated_at`` decides)."""
    return None if covered_version is None else input_version > covered_version
