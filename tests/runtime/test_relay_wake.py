"""When a batch wakes the outbox relay: at once when its requests went to the outbox, at
most once a scheduler tick when they only queued (the step that releases them wakes the
relay; the batch's wake only hurries rows a killed worker's step left behind). One wake
per batch made the relay take an empty outbox about 90 times a second at 2,000
comments/s."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from worker.runtime.process import RELAY, RELAY_BATCH, Runtime
from worker.settings import Settings


def woke(rt: Runtime) -> bool:
    was = rt.relay_wakeup.is_set()
    rt.relay_wakeup.clear()
    return was


async def test_queued_requests_wake_the_relay_once_a_tick_outboxed_ones_every_time(
    tmp_path: Path,
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'wb.db'}",
        regen_tick=timedelta(hours=1),  # no second tick within the test
    )
    rt = Runtime(settings)
    try:
        rt.wake_relay_after_batch(outboxed=False)
        assert woke(rt)  # the first: rows another worker left go out within a tick
        rt.wake_relay_after_batch(outboxed=False)
        assert not woke(rt)  # queued again within the tick: the step wakes the relay
        rt.wake_relay_after_batch(outboxed=True)
        assert woke(rt)  # in the outbox with the batch: at once, every time
        rt.wake_relay_after_batch(outboxed=True)
        assert woke(rt)
        rt.next_queued_wake = 0.0  # the tick is over
        rt.wake_relay_after_batch(outboxed=False)
        assert woke(rt)
    finally:
        await rt.close()


async def test_the_relay_takes_again_at_once_after_a_full_chunk_or_its_own_timeout(
    tmp_path: Path,
) -> None:
    """A short chunk took all there was (the relay waits for a wake); a full one may have
    left more, and a publish that timed out left its rows back: take again at once. Only
    the relay's own timeout counts, not parked expiry's (they back off apart)."""
    rt = Runtime(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'wb.db'}"))
    try:
        assert not rt.relay_again(RELAY_BATCH - 1)
        assert rt.relay_again(RELAY_BATCH)
        rt.publish_backoff["expire parked"] = 0.2
        assert not rt.relay_again(0)
        rt.publish_backoff[RELAY] = 0.2
        assert rt.relay_again(0)
    finally:
        await rt.close()
