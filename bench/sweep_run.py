"""Runs one full sweep in its own process so its time and peak RSS are its own."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from datetime import timedelta

from worker.services.sweep import Sweeper
from worker.settings import Settings
from worker.storage.database import create_engine, session_factory


async def main() -> None:
    engine = create_engine(os.environ["BENCH_DATABASE_URL"])
    sweeper = Sweeper(
        session_factory(engine),
        retry_after=timedelta(days=365),
        chunk_size=Settings().sweep_chunk,
    )
    started = time.monotonic()
    totals = await sweeper.run()
    elapsed = time.monotonic() - started
    await engine.dispose()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "actions": dict(totals.actions),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
