"""Reference (a): a Faust agent that only counts events, on the same broker and topic.

Run as a child process by the benchmark; prints the sustained rate from the first to the
last event as one JSON line, with the process's CPU seconds over the same span (on a shared
machine the rate moves with the other processes' load, the CPU per event much less).
"""

from __future__ import annotations

import json
import os
import sys
import time

import faust

from worker.kafka.app import TablelessApp

TOPIC, EXPECTED = os.environ["BENCH_TOPIC"], int(os.environ["BENCH_EXPECTED"])
app = TablelessApp(
    os.environ["BENCH_APP_ID"],
    broker=f"kafka://{os.environ['BENCH_BROKER']}",
    store="memory://",
    web_enabled=False,
    autodiscover=False,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
)
topic = app.topic(
    *TOPIC.split(","),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
)
state = {"n": 0, "first": 0.0, "cpu": 0.0}


@app.agent(topic)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for _ in stream:
        if state["n"] == 0:
            state["first"], state["cpu"] = time.monotonic(), time.process_time()
        state["n"] += 1
        if state["n"] == EXPECTED:
            elapsed = time.monotonic() - state["first"]
            cpu = time.process_time() - state["cpu"]
            done = {"events": EXPECTED, "seconds": elapsed, "rate": EXPECTED / elapsed, "cpu": cpu}
            print(json.dumps(done), flush=True)
            sys.stdout.flush()
            os._exit(0)


if __name__ == "__main__":
    # `faust worker` sets web_enabled from its own --with-web/--without-web (default on,
    # port 6066): without this the agent fails whenever another process holds that port.
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
