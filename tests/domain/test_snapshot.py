"""The input snapshot's pure rules: the fingerprint algebra, a comment's versions, the
ordering of results, coverage, and when a request buys nothing."""

from __future__ import annotations

from datetime import timedelta
from hashlib import blake2b

from tests.helpers.clock import T0
from worker.domain.snapshot import (
    CommentInput,
    behind_inputs,
    coverage,
    element,
    input_driven,
    signed,
    step,
    supersedes,
    unchanged,
    wire,
)
from worker.domain.values import StaleReason

M = timedelta(minutes=1)


def test_a_create_edit_and_delete_return_the_fingerprint_to_where_it_was() -> None:
    made = step(None, "comment.created", T0, "e1", "k")
    assert made is not None and made[1] == element("k", "e1")
    edited = step(made[0], "comment.edited", T0 + M, "e2", "k")
    assert edited is not None and edited[0] == CommentInput(T0 + M, "e2")
    gone = step(edited[0], "comment.deleted", T0 + 2 * M, "e3", "k")
    assert gone is not None and gone[0].deleted
    assert signed(made[1] + edited[1] + gone[1]) == 0


def test_older_versions_redeliveries_and_anything_after_a_deletion_change_nothing() -> None:
    held = CommentInput(T0 + M, "e2")
    assert step(held, "comment.edited", T0, "e9", "k") is None  # older
    assert step(held, "comment.created", T0 + M, "e2", "k") is None  # the same event again
    assert step(held, "comment.edited", T0 + 9 * M, "e2", "k") is None  # its clock clamped
    tie = step(held, "comment.edited", T0 + M, "e3", "k")  # same instant: the event id decides
    assert tie is not None and tie[0].version_event == "e3"
    tomb = CommentInput(None, None, deleted=True)
    assert all(step(tomb, k, T0 + M, "e4", "k") is None for k in ("comment.created", "x"))
    unknown = step(None, "comment.deleted", T0, "e5", "k")  # a tombstone, nothing to subtract
    assert unknown is not None and unknown[1] == 0 and unknown[0].deleted


def test_an_element_is_the_big_endian_blake2b_64_of_the_comment_and_its_version() -> None:
    # Stored fingerprints depend on it: any faster way to compute it must give the same.
    digest = blake2b(b"k\x00e1", digest_size=8).digest()
    assert element("k", "e1") == int.from_bytes(digest, "big") == 0xAB381DE780301460
    assert element("k", "e2") != element("k", "e1") != element("k2", "e1")


def test_fingerprints_are_bigints_on_the_row_and_16_hex_digits_on_the_wire() -> None:
    assert signed((1 << 64) - 2) == -2 and signed(1 << 64) == 0
    assert wire(-2) == "fffffffffffffffe" and wire(255) == "00000000000000ff"


def test_the_input_version_orders_results_and_the_clock_only_breaks_ties() -> None:
    ahead, behind = (T0 + 20 * 60 * M, "a"), (T0, "b")
    assert supersedes(3, 2, behind, ahead)  # newer inputs, whatever the clocks say
    assert not supersedes(2, 3, ahead, behind)
    assert supersedes(2, 2, ahead, behind) and not supersedes(2, 2, behind, ahead)
    assert not supersedes(None, 2, behind, ahead)  # no echo: the timestamp rule
    assert supersedes(5, None, ahead, behind) and not supersedes(5, None, behind, ahead)


def test_coverage_of_an_echo() -> None:
    current = coverage(4, 4, -7)
    assert (current.version, current.fingerprint, current.behind) == (4, -7, False)
    older = coverage(3, 4, -7)
    assert (older.version, older.fingerprint, older.behind) == (3, None, True)
    for unknown in (coverage(None, 4, -7), coverage(5, 4, -7)):  # none, or from the future
        assert (unknown.version, unknown.fingerprint, unknown.behind) == (None, None, False)
    assert behind_inputs(None, 3) is None
    assert behind_inputs(2, 3) is True and behind_inputs(3, 3) is False


def test_only_changes_of_the_inputs_may_be_skipped() -> None:
    assert input_driven(StaleReason.COMMENT_DELETED, "comment:e1")
    assert input_driven(StaleReason.NEW_COMMENT, "sweep")
    assert not input_driven(StaleReason.NEW_COMMENT, "operator:ops")
    for reason in (StaleReason.EXPIRED, StaleReason.MANUAL, StaleReason.MISSING):
        assert not input_driven(reason, None)
    assert unchanged(7, 7, True, T0 + M, T0)
    assert not unchanged(7, 7, True, T0, T0)  # expired
    assert not unchanged(7, 7, False, None, T0)  # no highlight
    assert not unchanged(None, 7, True, None, T0) and not unchanged(6, 7, True, None, T0)
