"""The lean reference (``bench.lean``) run beside the worker, as a child process.

Its rate comes from the same query on the same table as the worker's (``Bench.claims_rate``),
so that the ratio compares the two pieces of code, not two ways of timing them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from bench.harness import Bench
from bench.lean import IDLE_FETCH_WAIT_MS
from bench.profile import IngestProfile

ROOT = Path(__file__).parent.parent


def start_lean(
    b: Bench,
    topic: str,
    expected: int,
    group: str | None = None,
    fetch_wait_ms: int = IDLE_FETCH_WAIT_MS,
) -> subprocess.Popen[str]:
    """The reference in a process of its own (its own CPU, its own event loop), consuming
    ``expected`` events of ``topic`` from the start, in consumer group ``group`` (default:
    one of its own), each fetch held at most ``fetch_wait_ms``; its log goes next to the
    workers'."""
    env = {
        **os.environ,
        "BENCH_FETCH_WAIT_MS": str(fetch_wait_ms),
        "BENCH_TOPIC": topic,
        "BENCH_EXPECTED": str(expected),
        "BENCH_BROKER": b.broker.address,
        "BENCH_DATABASE_URL": b.db_url,
        "BENCH_GROUP": group or f"lean-{uuid.uuid4().hex[:6]}",
    }
    with (b.logs / f"lean-{topic}-{uuid.uuid4().hex[:4]}.log").open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.lean"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )


def lean_cpu(proc: subprocess.Popen[str], timeout: float) -> float:
    """Wait for the reference to finish; returns its CPU seconds from first to last batch."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"lean reference failed ({proc.returncode}): see its log in the logs")
    return float(json.loads(out.strip().splitlines()[-1])["cpu"])


async def lean_ingest(b: Bench, topic: str, events: int) -> tuple[float, float]:
    """The reference's events/s over ``topic``'s ``events`` and its CPU per event (us)."""
    profile = IngestProfile(b.engine, f"{topic}-lean")  # BENCH_PROFILE: its statements
    await profile.begin()
    proc = start_lean(b, topic, events)
    cpu = await asyncio.to_thread(lean_cpu, proc, 1800)
    await profile.end(events)
    return await b.claims_rate(events), cpu / events * 1e6
