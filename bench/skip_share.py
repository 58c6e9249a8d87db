"""The share of regeneration requests skipped as unchanged, on a workload with comments
created and deleted again while their requests settle (issue 27).

    python -m bench.skip_share postgresql://... [--users N] [--pairs SHARE]

In process, no broker, on PostgreSQL's set-based path (the database's tables are emptied
first). ``users`` highlights are seeded fresh and of known coverage, as a generator that
echoes ``input_version`` leaves them (covering input version 0, fingerprint 0). Each user
then gets one new comment; for a ``pairs`` share of them (every n-th user) that comment is
deleted again, a second later, while its request still settles (``WB_REGEN_SETTLE`` 30 s).
Once the settle window is over, scheduler steps run until nothing is due and count what
they published and what they skipped (``Published.skipped``, the figure behind
``wb_regen_skipped_total{reason="unchanged"}``). A user whose comment is gone again has
the input set its highlight covers, so exactly the pairs' share should be skipped: no
more (a user with a live new comment must be asked), no less (each pair buys nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from bench.harness import Row, ok
from worker.domain.batch import RawMessage
from worker.domain.scheduling import RegenPolicy
from worker.domain.wire import InputStream
from worker.services import scheduler
from worker.services.pipeline import Pipeline
from worker.storage import migrate
from worker.storage.database import create_engine, session_factory

POLICY = RegenPolicy(settle=timedelta(seconds=30), max_wait=timedelta(minutes=5))
BATCH = 500
EMPTY = text(
    "TRUNCATE user_profile_highlights, outbox, processed_events, signal_activity, "
    "comment_inputs, deleted_comments, parked_comments, signal_requests, regen_budget"
)
SEED = text(
    "INSERT INTO user_profile_highlights (user_id, bio_text, proof_points_json, quotes_json,"
    " source_group, snapshot_hash, llm_model, generated_at, stale_after, manual_override,"
    " is_stale, generation, regen_attempts, created_at, updated_at, input_version,"
    " input_fingerprint, covered_version, covered_fingerprint)"
    " SELECT g, 'b', '[]', '[]', 'g', 's', 'm', now() - interval '1 day',"
    " now() + interval '6 days', false, false, 0, 0, now(), now(), 0, 0, 0, 0"
    " FROM generate_series(1, :users) g"
)


def events(users: int, pairs: float, at: datetime) -> list[RawMessage]:
    """Every user's new comment, then the deletions of the pairs' (a second later)."""
    every = round(1 / pairs) if pairs > 0 else 0
    paired = [u for u in range(1, users + 1) if every and u % every == 0]
    docs: list[dict[str, Any]] = [
        {"type": "comment.created", "user_id": u, "at": at} for u in range(1, users + 1)
    ]
    docs += [
        {"type": "comment.deleted", "user_id": u, "at": at + timedelta(seconds=1)} for u in paired
    ]
    return [
        RawMessage(
            json.dumps(
                {
                    "event_id": f"e{i}",
                    "type": d["type"],
                    "comment_id": f"c{d['user_id']}",
                    "request_id": f"r{d['user_id']}",
                    "user_id": d["user_id"],
                    "occurred_at": d["at"].isoformat(),
                }
            ).encode(),
            "signal.comments",
            0,
            i,
        )
        for i, d in enumerate(docs)
    ]


async def measure(url: str, users: int, pairs: float) -> dict[str, float]:
    """Publish and skip counts of one run (see the module's docstring)."""
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(EMPTY)
            await conn.execute(SEED, {"users": users})
        sessions = session_factory(engine)
        now = datetime.now(UTC)
        messages = events(users, pairs, now - timedelta(seconds=10))
        pipeline = Pipeline(sessions, policy=POLICY)
        for start in range(0, len(messages), BATCH):
            await pipeline.process(InputStream.COMMENTS, messages[start : start + BATCH])
        settled = datetime.now(UTC) + POLICY.settle + timedelta(seconds=1)
        published = skipped = 0
        while True:
            async with sessions.begin() as session:
                done = await scheduler.publish_due(session, settled, POLICY)
            published, skipped = published + done.count, skipped + done.skipped
            if done.count + done.skipped == 0:
                break
    finally:
        await engine.dispose()
    return {"users": users, "pairs": pairs, "published": published, "skipped": skipped}


def skip_rows(figures: dict[str, float]) -> list[Row]:
    """The bench's rows: the share skipped, against the share of users with a pair."""
    due = figures["published"] + figures["skipped"]
    share = figures["skipped"] / due if due else 0.0
    every = round(1 / figures["pairs"]) if figures["pairs"] > 0 else 0
    expected = int(figures["users"]) // every if every else 0
    return [
        (
            f"requests skipped as unchanged ({int(figures['users']):,} users, "
            f"{figures['pairs']:.0%} create-delete pairs)",
            f"{int(figures['skipped']):,} of {int(due):,} due ({share:.1%})",
            f"{expected:,} pairs",
            "= the pairs",
            ok(figures["skipped"] == expected and due == figures["users"]),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgresql://... (its worker tables are emptied)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--pairs", type=float, default=0.25, help="share of users, 0-1")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.url, args.users, args.pairs))
    print(json.dumps(figures))
    for row in skip_rows(figures):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
