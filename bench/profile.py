"""Opt-in: where a worker's ingest spends its time (issue 28). With ``BENCH_PROFILE=DIR``
set, each ``Bench.worker_ingest`` (ingest, naive, scale) writes to ``DIR`` (the lean
reference's ingest: its statements only):

- ``<topic>-<n>w-pyspy.txt``: py-spy's collapsed stacks (``--format raw``, 100 samples a
  second, ``--nonblocking``: the worker is never paused; threads apart, by function) of the
  first worker, from its first claim to the last (py-spy must be on PATH or beside the
  interpreter); ``python -m bench.profile FILE`` sums it by owner and entry point;
- ``<topic>-<n>w-statements.json``: ``pg_stat_statements`` over the same ingest (calls,
  execution time, rows, WAL bytes per statement), where the server preloads it: the bench's
  throwaway cluster does when ``BENCH_PROFILE`` is set (``preload``).

The figures of a profiled run are not comparable with an unprofiled run's (sampling and
statement tracking cost CPU): profile in a run of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

STATEMENTS = (
    "SELECT query, calls, total_exec_time, rows, wal_bytes, wal_records, "
    "shared_blks_hit, shared_blks_read, shared_blks_dirtied FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "ORDER BY total_exec_time DESC"
)


def directory() -> Path | None:
    where = os.environ.get("BENCH_PROFILE")
    return Path(where) if where else None


def preload(settings: dict[str, str]) -> None:
    """The throwaway cluster's settings, with pg_stat_statements when profiling."""
    if directory() is not None:
        settings["shared_preload_libraries"] = "pg_stat_statements"


class IngestProfile:
    """py-spy on one worker and the database's statements, for one ingest."""

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self.engine, self.name = engine, name
        self.where = directory()
        self.spy: subprocess.Popen[bytes] | None = None
        self.statements = False

    async def begin(self) -> None:
        """Before the workers start: reset the statements' figures (if tracked)."""
        if self.where is None:
            return
        self.where.mkdir(parents=True, exist_ok=True)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
                await conn.execute(text("SELECT pg_stat_statements_reset()"))
            self.statements = True
        except Exception as exc:  # not preloaded: py-spy alone
            print(f"[bench profile] no pg_stat_statements: {exc}", file=sys.stderr)

    def first_claim(self, pid: int) -> None:
        """At the first claim: start sampling ``pid``."""
        if self.where is None or self.spy is not None:
            return
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.where / f"{self.name}-pyspy.txt"
        argv = [spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
        argv += ["--full-filenames", "--threads", "--function"]
        self.spy = subprocess.Popen(
            [*argv, "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """py-spy ended, whatever happened (a no-op once ``end`` stopped it)."""
        if self.spy is not None and self.spy.poll() is None:
            self.spy.kill()
            self.spy.wait()

    async def end(self, events: int) -> None:
        """At the last claim: stop sampling (py-spy writes its file on SIGINT) and save
        the statements' figures."""
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)
            self.spy.wait(timeout=60)
        if not self.statements:
            return
        assert self.where is not None
        async with self.engine.connect() as conn:
            rows: list[dict[str, Any]] = [
                {k: (float(v) if k != "query" else v) for k, v in r._mapping.items()}
                for r in (await conn.execute(text(STATEMENTS))).all()
            ]
        doc = {"events": events, "statements": rows}
        (self.where / f"{self.name}-statements.json").write_text(json.dumps(doc, indent=1))


# Where a sample's innermost frame is (the first match of its file's path): the CPU's
# owner. ``summary`` also counts each sample under the outermost entry point it passed.
OWNERS = (
    ("/worker/", "worker (our code)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/asyncpg/", "asyncpg"),
    ("/aiokafka/", "aiokafka"),
    ("/faust/", "Faust"),
    ("/mode/", "mode (Faust's services)"),
    ("/prometheus_client/", "prometheus_client"),
    ("/json/", "json"),
    ("/asyncio/", "asyncio (event loop)"),
    ("/aiohttp/", "aiohttp"),
    ("/pydantic", "pydantic"),
    ("/site-packages/", "other libraries"),
    ("/lib/python3", "standard library"),
)
ENTRIES = (
    ("Runtime.handle", "input batches: decode, the pipeline's transaction, metrics"),
    ("schedule_once", "scheduler step"),
    ("relay_once", "outbox relay"),
    ("refresh_gauges", "gauges"),
    ("_drain_messages", "consumer: fetch loop (aiokafka, Faust)"),
    ("_fetch_records", "consumer: fetch loop (aiokafka, Faust)"),
    ("_fetcher_routine", "consumer: fetch loop (aiokafka, Faust)"),
    ("_fetch_requests_routine", "consumer: fetch loop (aiokafka, Faust)"),
    ("_apply_and_ack", "input batches: decode, the pipeline's transaction, metrics"),
)


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def summary(path: Path, top: int = 25) -> str:
    """The collapsed stacks in ``path`` summed by owner (innermost frame's package), by
    entry point (outermost known frame), and the hottest innermost functions."""
    from collections import Counter

    owners: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), _frames(stack)
        total += n
        threads[frames[0] if frames[0].startswith("thread") else "-"] += n
        leaf = frames[-1]
        leaves[leaf] += n
        owners[next((o for k, o in OWNERS if k in leaf), "other (native, threads)")] += n
        entry = next((e for f in frames for k, e in ENTRIES if k in f.split(" (")[0]), None)
        entries[entry or "other (Faust's and aiokafka's services, idle)"] += n

    def block(title: str, counts: Counter[str], k: int) -> list[str]:
        return [title] + [f"  {n / total:6.1%}  {name}" for name, n in counts.most_common(k)]

    lines = [f"{path.name}: {total} samples"]
    lines += block("by thread", threads, 5)
    lines += block("by owner (innermost frame)", owners, 20)
    lines += block("by entry point", entries, 20)
    lines += block("hottest innermost frames", leaves, top)
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summary(Path(name)))
