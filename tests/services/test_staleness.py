"""The stale rules change only the columns the set-based paths write back (``WRITTEN``),
and every one of those columns is one they change: the list cannot drift from the rules'
assignments unnoticed. Run on ORM rows outside any session (the rules need no database)."""

from __future__ import annotations

import itertools
from dataclasses import fields
from datetime import timedelta
from typing import Any

import pytest

from tests.helpers.clock import T0
from tests.helpers.factories import result
from worker.domain.scheduling import IMMEDIATE, RegenPolicy
from worker.domain.values import RegenReason, StaleOutcome, StaleReason, UpsertMeta
from worker.services.locking import REQUESTED, WRITTEN
from worker.services.outbox import OutboxEntry, OutboxSink
from worker.services.result_batch import CONTENT, COVERED
from worker.services.results import settle_result
from worker.services.staleness import (
    StaleMark,
    enqueue,
    mark_stale_row,
    request_if_unanswered,
)
from worker.storage.models import HighlightRow, RowState

SETTLE = RegenPolicy(settle=timedelta(minutes=5), max_wait=timedelta(minutes=30))
NOW = T0 + timedelta(hours=3)
COLUMNS = [c.key for c in HighlightRow.__table__.columns]


def _row(**state: Any) -> HighlightRow:
    """A row with every column set (a column the rules touch cannot hide behind None)."""
    values: dict[str, Any] = {
        "user_id": 1,
        "bio_text": "bio",
        "proof_points_json": ["p"],
        "quotes_json": [],
        "source_group": "g",
        "snapshot_hash": "s0",
        "llm_model": "m",
        "generated_at": T0,
        "stale_after": T0 + timedelta(days=7),
        "manual_override": False,
        "override_text": None,
        "override_actor": None,
        "override_set_at": None,
        "is_stale": False,
        "stale_reason": None,
        "stale_since": None,
        "generation": 3,
        "regen_request_id": None,
        "regen_requested_at": None,
        "regen_generation": None,
        "regen_attempts": 0,
        "regen_queued_at": None,
        "regen_first_change_at": None,
        "regen_last_change_at": None,
        "regen_priority": None,
        "regen_queued_reason": None,
        "regen_queued_trigger": None,
        "regen_unseen": 0,
        "input_version": 4,
        "input_fingerprint": 11,
        "covered_version": 4,
        "covered_fingerprint": 11,
        "regen_skipped_at": None,
        "regen_request_lane": None,
        "regen_request_reason": None,
        "usage_input_tokens": 100,
        "usage_output_tokens": 10,
        "usage_cost_usd": 0.01,
        "regen_token_estimate": 900,  # a request's charge: a new request clears it
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(state)
    assert set(values) == set(COLUMNS)
    return HighlightRow(**values)


PENDING = {
    "is_stale": True,
    "stale_reason": "new_comment",
    "stale_since": T0,
    "regen_request_id": "r" * 32,
    "regen_requested_at": T0,
    "regen_generation": 3,
    "regen_attempts": 1,
}
QUEUED = {
    "is_stale": True,
    "stale_reason": "new_comment",
    "stale_since": T0,
    "regen_queued_at": T0,
    "regen_first_change_at": T0,
    "regen_last_change_at": T0,
    "regen_priority": 3,
    "regen_queued_reason": "new_comment",
    "regen_queued_trigger": "comment:c0",
    "regen_unseen": 2,
}
STARTS: dict[str, dict[str, Any]] = {
    "fresh": {},
    "no content": {"generated_at": None, "snapshot_hash": None},
    "pending": PENDING,
    "queued": QUEUED,
    "stale, request gone": {**PENDING, "regen_request_id": None},
    "override": {"manual_override": True, "override_text": "x", "override_actor": "a"},
}


def _changed(row: HighlightRow, before: dict[str, Any]) -> set[str]:
    return {c for c in COLUMNS if getattr(row, c) != before[c]}


def _apply(name: str, policy: RegenPolicy, rule: str) -> set[str]:
    return _requesting(name, policy, rule)[0]


def _requesting(name: str, policy: RegenPolicy, rule: str) -> tuple[set[str], list[OutboxEntry]]:
    """The columns a rule changed, and the requests it queued in the outbox."""
    row = _row(**STARTS[name])
    before = {c: getattr(row, c) for c in COLUMNS}
    queued: list[OutboxEntry] = []
    sink = OutboxSink(queued.append, policy)
    if rule == "mark":
        mark = StaleMark.stale(StaleReason.COMMENT_EDITED, NOW, "comment:c1", unseen=1)
        mark_stale_row(sink, row, mark)
    elif rule == "expire":
        since = T0 + timedelta(days=7)
        mark_stale_row(sink, row, StaleMark.stale(StaleReason.EXPIRED, NOW, first_change=since))
    elif rule == "ask again":
        request_if_unanswered(sink, row, NOW, "sweep")
    elif rule == "retry":
        enqueue(sink, row, StaleMark(RegenReason.RETRY, NOW, "sweep"))
    else:
        later = result(1, generated_at=NOW - timedelta(minutes=1))
        settle_result(row, later, "s1", UpsertMeta(generation=3), NOW, lambda _: None)
    return _changed(row, before), queued


STALE_RULES = ["mark", "expire", "ask again", "retry"]


@pytest.mark.parametrize(
    ("start", "policy", "rule"),
    list(itertools.product(STARTS, [IMMEDIATE, SETTLE], [*STALE_RULES, "result"])),
)
def test_a_rule_changes_only_the_columns_written_back(
    start: str, policy: RegenPolicy, rule: str
) -> None:
    written_with_content = {"snapshot_hash", "generated_at", *COVERED}
    allowed = set(WRITTEN) | (written_with_content if rule == "result" else set())
    assert _apply(start, policy, rule) <= allowed


def test_every_written_column_is_one_a_stale_rule_changes() -> None:
    """The other way round: a column left in ``WRITTEN`` that no rule changes any more is
    drift too (the set-based write would carry it for nothing)."""
    changed: set[str] = set()
    for start, policy, rule in itertools.product(STARTS, [IMMEDIATE, SETTLE], STALE_RULES):
        changed |= _apply(start, policy, rule)
    assert changed == set(WRITTEN)


@pytest.mark.parametrize(
    ("start", "policy", "rule"), list(itertools.product(STARTS, [IMMEDIATE, SETTLE], STALE_RULES))
)
def test_only_a_rule_that_makes_a_request_changes_the_requested_columns(
    start: str, policy: RegenPolicy, rule: str
) -> None:
    """What lets the comment batch write ``REQUESTED`` back only for the rows whose request
    it queued (their key: the user id), and not read them: a request sets all three."""
    changed, queued = _requesting(start, policy, rule)
    assert [entry.key for entry in queued] == (["1"] if changed & set(REQUESTED) else [])
    if queued:  # each of the three from the request (the row starts with other values)
        assert set(REQUESTED) <= changed


def test_the_plain_row_state_carries_the_written_columns_and_what_the_rules_read() -> None:
    """``RowState`` is what the set-based paths lock and write back: every written column,
    plus the columns the rules only read (a result writes two of them with its content)."""
    state = {f.name for f in fields(RowState)}
    assert set(WRITTEN) <= state <= set(COLUMNS)
    read = {"user_id", "snapshot_hash", "generated_at", "manual_override"}
    snapshot = {"input_version", "input_fingerprint", "covered_version"}
    assert state - set(WRITTEN) == read | snapshot
    # a comment batch reads all but the last ones (``locking.MARK_STATE``)
    assert [f.name for f in fields(RowState)][-len(REQUESTED) :] == list(REQUESTED)
    assert not set(WRITTEN) & set(CONTENT)


def test_a_mark_under_a_settle_policy_queues_and_a_second_one_settles() -> None:
    row = _row()
    queued: list[OutboxEntry] = []
    sink = OutboxSink(queued.append, SETTLE)
    first = StaleMark.stale(StaleReason.NEW_COMMENT, NOW, "comment:c1", unseen=1)
    assert mark_stale_row(sink, row, first) is StaleOutcome.REQUESTED
    second = StaleMark.stale(StaleReason.COMMENT_DELETED, NOW + timedelta(seconds=9), unseen=2)
    assert mark_stale_row(sink, row, second) is StaleOutcome.SETTLED
    assert not queued  # nothing requested yet: the scheduler's step will
    assert row.regen_queued_at == NOW and row.regen_last_change_at == second.at
    assert row.regen_unseen == 3 and row.regen_queued_reason == "comment_deleted"
    assert row.generation == 5 and row.stale_reason == "comment_deleted"
