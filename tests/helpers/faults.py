"""Fault-injection harness: a seeded workload, its independent oracle, and convergence.

The oracle is computed from the produced events alone, never from the worker's code, and
checks only order-independent consequences of the rules (see ``check``). The workers run
the regeneration scheduler as production does (``SCHEDULER_ENV``: settling, a budget shared
by the group): convergence includes an empty queue, and the oracle checks that no queued
request was lost and that the topic never received requests faster than the budget.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.helpers.budget import assert_within_budget, first_seen
from tests.helpers.factories import result
from tests.helpers.live import Kafka, eventually
from worker.domain.snapshot import element, signed
from worker.services import outbox
from worker.services.store import HighlightStore
from worker.storage.models import (
    HighlightRow,
    ParkedCommentRow,
    ProcessedEventRow,
    SignalActivityRow,
)

COMMENTS, REQUESTS, GENERATED = "signal.comments", "signal.requests", "profile.highlights.generated"
REGEN = "profile.highlights.regen-requests"
STREAM_OF = {COMMENTS: "comments", REQUESTS: "requests", GENERATED: "generated"}
# Settle 1 s (a user's burst of comments coalesces), at most 3 s; 100 requests a second
# across the group with bursts of 100: the workload's few thousand requests drain in
# under a minute, slowly enough that the budget shapes what reaches the topic.
RATE_PER_S, BURST = 100, 100
SCHEDULER_ENV = {
    "WB_REGEN_SETTLE": "1s",
    "WB_REGEN_MAX_WAIT": "3s",
    "WB_REGEN_RATE": str(RATE_PER_S * 60),
    "WB_REGEN_BURST": str(BURST),
    "WB_REGEN_TICK": "100ms",
}
BAD = [
    b"{oops",
    b"\xff\xfe",
    b"[]",
    b'{"event_id": "d", "event_id": "e"}',
    b'{"event_id": "x", "type": "comment.liked", "comment_id": "c", "request_id": "r",'
    b' "occurred_at": "2026-01-01T00:00:00Z"}',
]


@dataclass
class Message:
    topic: str
    key: str | None
    value: dict[str, Any] | bytes


@dataclass
class Workload:
    """Seeded events over ``users`` users: comments (direct and via the request map, some
    before their mapping), mappings, generator results, bad messages and redeliveries."""

    seed: int
    users: int = 2000
    comments: int = 7000
    results: int = 1200
    requests: int = 500
    bad: int = 40
    base: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    )
    seeded: dict[int, str] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    # event id -> (topic, partition, offset) of each good event produced: where the events a
    # run never processed are, when it fails
    placed: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.seeded = {u: f"seed-{u}" for u in range(1, self.users + 1) if rng.random() < 0.7}
        owner = {f"req-{k}": rng.randint(1, self.users) for k in range(self.requests)}
        pending_maps = list(owner)
        rng.shuffle(pending_maps)
        events: list[Message] = []
        for i in range(self.comments):
            request_id = rng.choice(list(owner))
            direct = rng.random() < 0.6
            user = rng.randint(1, self.users) if direct else owner[request_id]
            kind = rng.choices(["created", "edited", "deleted"], [80, 15, 5])[0]
            at = self.base + timedelta(seconds=rng.randint(-3600, 3600))
            doc: dict[str, Any] = {
                "event_id": f"c{i}",
                "type": f"comment.{kind}",
                "comment_id": f"cm{i}",
                "request_id": request_id,
                "occurred_at": at.isoformat(),
            }
            if direct:
                doc["user_id"] = user
            events.append(Message(COMMENTS, str(user) if direct else request_id, doc))
        for i in range(self.results):
            user = rng.randint(1, self.users)
            at = self.base + timedelta(seconds=rng.randint(-1800, 5400))
            events.append(
                Message(
                    GENERATED,
                    str(user),
                    {
                        "event_id": f"g{i}",
                        "user_id": user,
                        "bio_text": f"bio {i}",
                        "proof_points": [],
                        "quotes": [],
                        "source_group": "grp",
                        "snapshot_hash": f"g-{i}",
                        "llm_model": "m",
                        "generated_at": at.isoformat(),
                        "generation": 0,
                    },
                )
            )
        rng.shuffle(events)
        for request_id in pending_maps:  # mappings land anywhere, often after their comments
            events.insert(
                rng.randint(0, len(events)),
                Message(
                    REQUESTS,
                    request_id,
                    {
                        "event_id": f"m-{request_id}",
                        "request_id": request_id,
                        "user_id": owner[request_id],
                        "occurred_at": self.base.isoformat(),
                    },
                ),
            )
        for i in range(self.bad):
            events.insert(rng.randint(0, len(events)), Message(COMMENTS, None, BAD[i % len(BAD)]))
        for _ in range(len(events) // 10):  # redeliveries of earlier events
            events.insert(rng.randint(0, len(events)), rng.choice(events))
        self.messages = events

    async def seed_store(self, store: HighlightStore) -> None:
        for user, snap in self.seeded.items():
            await store.upsert_auto(result(user, generated_at=self.base), snap)

    def good_ids(self) -> dict[str, set[str]]:
        ids: dict[str, set[str]] = defaultdict(set)
        for m in self.messages:
            if isinstance(m.value, dict):
                ids[STREAM_OF[m.topic]].add(m.value["event_id"])
        return ids

    async def produce(self, kafka: Kafka, seconds: float) -> None:
        """All messages, spread over about ``seconds`` so faults land mid-stream."""
        chunk = max(1, int(len(self.messages) / max(seconds / 0.1, 1)))
        for start in range(0, len(self.messages), chunk):
            batch = self.messages[start : start + chunk]
            sent = await asyncio.gather(*(kafka.send(m.topic, m.value, key=m.key) for m in batch))
            for m, (partition, offset) in zip(batch, sent, strict=True):
                if isinstance(m.value, dict):  # a redelivery: its first copy's place
                    self.placed.setdefault(m.value["event_id"], (m.topic, partition, offset))
            await asyncio.sleep(0.1)

    def where(self, event_ids: set[str]) -> str:
        """Where these events were produced, per topic and partition: how many, their
        offsets' range and the partition's last offset produced (a hole in a partition,
        or its tail?)."""
        if not event_ids:
            return "none"
        last: dict[tuple[str, int], int] = defaultdict(lambda: -1)
        for topic, partition, offset in self.placed.values():
            last[(topic, partition)] = max(last[(topic, partition)], offset)
        spots: dict[tuple[str, int], list[int]] = defaultdict(list)
        for event_id in event_ids:
            topic, partition, offset = self.placed.get(event_id, ("unsent", -1, -1))
            spots[(topic, partition)].append(offset)
        return ", ".join(
            f"{topic}[{partition}] {len(offs)} at {min(offs)}-{max(offs)} "
            f"(last produced {last[(topic, partition)]})"
            for (topic, partition), offs in sorted(spots.items())
        )

    def comments_by_user(self) -> dict[int, dict[str, dict[str, Any]]]:
        """The good comments by user (through the request map), by event id (redeliveries
        are one event)."""
        owner = {
            m.value["request_id"]: m.value["user_id"]
            for m in self.messages
            if m.topic == REQUESTS and isinstance(m.value, dict)
        }
        comments: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        for m in self.messages:
            if m.topic == COMMENTS and isinstance(m.value, dict):
                v = m.value
                comments[v.get("user_id") or owner[v["request_id"]]][v["event_id"]] = v
        return comments

    def expected(self) -> tuple[dict[int, tuple[datetime, str]], set[int], dict[int, int]]:
        """Per user: final content (generated_at, snapshot) by the newest-wins rule; users
        that must be stale; comment counts for users whose comments were never deleted."""
        content = {u: (self.base, s) for u, s in self.seeded.items()}
        for m in self.messages:
            if m.topic == GENERATED and isinstance(m.value, dict):
                v = m.value
                candidate = (datetime.fromisoformat(v["generated_at"]), v["snapshot_hash"])
                content[v["user_id"]] = max(content.get(v["user_id"], candidate), candidate)
        must_be_stale, counts = set(), {}
        for user, by_id in self.comments_by_user().items():
            final = content.get(user)
            if any(
                c["type"] == "comment.deleted"
                or final is None
                or datetime.fromisoformat(c["occurred_at"]) > final[0]
                for c in by_id.values()
            ):
                must_be_stale.add(user)
            if all(c["type"] != "comment.deleted" for c in by_id.values()):
                counts[user] = sum(c["type"] == "comment.created" for c in by_id.values())
        return content, must_be_stale, counts

    def inputs(self) -> dict[int, tuple[int, int]]:
        """Per user with comments: the input snapshot (version, fingerprint) the worker must
        hold, from scratch. Each comment here has one event, so each event is one change
        (``input_version`` counts them: none lost, none applied twice) and the live set is
        the comments not deleted, each at its only version."""
        return {
            user: (
                len(by_id),
                signed(
                    sum(
                        element(c["comment_id"], c["event_id"])
                        for c in by_id.values()
                        if c["type"] != "comment.deleted"
                    )
                ),
            )
            for user, by_id in self.comments_by_user().items()
        }


async def converged(
    sessions: async_sessionmaker[AsyncSession], workload: Workload, timeout: float = 240.0
) -> None:
    """Wait until every good event is processed, nothing is parked, no request is queued,
    the outbox is drained."""
    wanted = workload.good_ids()
    total = sum(len(v) for v in wanted.values())

    async def done() -> bool:
        async with sessions() as session:
            processed = await session.scalar(select(func.count()).select_from(ProcessedEventRow))
            parked = await session.scalar(select(func.count()).select_from(ParkedCommentRow))
            unpublished = await outbox.backlog(session)
            queued = await _queued(session)
        state["last"] = (
            f"processed {processed}/{total}, parked {parked}, queued {queued}, "
            f"unpublished {unpublished}"
        )
        return processed == total and parked == 0 and queued == 0 and unpublished == 0

    state: dict[str, str] = {}
    try:
        await eventually(done, timeout=timeout, what="convergence")
    except AssertionError as exc:
        try:
            where = workload.where(await _unprocessed(sessions, wanted))
        except Exception as listing:  # the timeout is the failure; this only explains it
            where = f"(could not list: {listing!r})"
        raise AssertionError(f"{exc}: {state.get('last')}; unprocessed: {where}") from None


async def _unprocessed(
    sessions: async_sessionmaker[AsyncSession], wanted: dict[str, set[str]]
) -> set[str]:
    async with sessions() as session:
        rows = (
            await session.execute(select(ProcessedEventRow.stream, ProcessedEventRow.event_id))
        ).all()
    seen = {(stream, event_id) for stream, event_id in rows}
    return {e for stream, ids in wanted.items() for e in ids if (stream, e) not in seen}


async def _queued(session: AsyncSession) -> int:
    stmt = select(func.count()).where(HighlightRow.regen_queued_at.is_not(None))
    return int(await session.scalar(stmt) or 0)


async def _stored(
    sessions: async_sessionmaker[AsyncSession],
) -> tuple[Any, set[Any], int, dict[int, int]]:
    async with sessions() as session:
        rows = {r.user_id: r for r in (await session.scalars(select(HighlightRow))).all()}
        claimed = select(ProcessedEventRow.stream, ProcessedEventRow.event_id)
        processed = set((await session.execute(claimed)).all())
        unpublished = await outbox.backlog(session)
        activity = {
            a.user_id: a.comment_count
            for a in (await session.scalars(select(SignalActivityRow))).all()
        }
    return rows, processed, unpublished, activity


def _check_rows(
    workload: Workload, rows: dict[int, HighlightRow], activity: dict[int, int]
) -> None:
    content, must_be_stale, counts = workload.expected()
    for user, (at, snap) in content.items():
        row = rows.get(user)
        got = (row.generated_at, row.snapshot_hash) if row is not None else None
        assert got == (at, snap), f"user {user}: content {got}, expected {(at, snap)}"
    for user in must_be_stale:
        assert rows[user].is_stale, f"user {user} has a newer comment but is not stale"
    for user, count in counts.items():
        assert activity.get(user) == count, f"user {user}: {activity.get(user)} != {count}"
    for user, snapshot in workload.inputs().items():
        got = (rows[user].input_version, rows[user].input_fingerprint)
        assert got == snapshot, f"user {user}: input snapshot {got}, expected {snapshot}"


def _check_requests(on_topic: list[dict[str, Any]], rows: dict[int, HighlightRow]) -> int:
    """Every message id means one message, one request per generation, and every stale
    row's pending request is on the topic (a queued request was published, not lost);
    returns the number of distinct requests."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in on_topic:
        by_id[request["event_id"]].append(request)
    generations: dict[int, list[int]] = defaultdict(list)
    for event_id, copies in by_id.items():
        assert all(c == copies[0] for c in copies), f"different messages share {event_id}"
        generations[copies[0]["user_id"]].append(copies[0]["generation"])
    for user, gens in generations.items():
        assert len(gens) == len(set(gens)), f"user {user} was asked twice for one generation"
    for row in rows.values():
        assert row.regen_queued_at is None, f"user {row.user_id} still queued at convergence"
        if row.is_stale and not row.manual_override:
            assert row.regen_request_id is not None, f"stale user {row.user_id} has no request"
            assert row.regen_request_id in by_id, (
                f"user {row.user_id}'s request is not on the topic"
            )
    return len(by_id)


async def check(
    sessions: async_sessionmaker[AsyncSession], kafka: Kafka, workload: Workload
) -> dict[str, int]:
    """Assert the oracle; return figures for the report."""
    rows, processed, unpublished, activity = await _stored(sessions)
    for stream, ids in workload.good_ids().items():
        missing = {i for i in ids if (stream, i) not in processed}
        assert not missing, f"{len(missing)} {stream} events neither applied nor dead-lettered"
    dead = await kafka.read_all(f"{COMMENTS}.dlq")
    assert {bytes(d.value) for d in dead} >= set(BAD), "a bad message did not reach the DLQ"
    _check_rows(workload, rows, activity)
    records = await kafka.read_all(REGEN)
    on_topic = [json.loads(r.value) for r in records]
    requests = _check_requests(on_topic, rows)
    excess = assert_within_budget(first_seen(records), RATE_PER_S, BURST)
    assert unpublished == 0, f"{unpublished} requests still in the outbox after convergence"
    return {
        "events": len(workload.messages),
        "users": len(rows),
        "stale": sum(r.is_stale for r in rows.values()),
        "requests": requests,
        "topic_copies": len(on_topic),
        "dead_letters": len(dead),
        "beyond_budget": round(max(excess, 0.0)),
    }
