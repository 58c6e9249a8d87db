"""PartitionLanes: one batch at a time under light load, more at once when a backlog waits,
never two with the same partition, order per partition kept."""

from __future__ import annotations

import asyncio
import random
from typing import NamedTuple

import pytest

from tests.helpers.batches import Recorder
from worker.kafka.partition_lanes import PartitionLanes
from worker.settings import Settings


class Msg(NamedTuple):
    partition: int
    offset: int


def _fetch(partitions: range, offsets: range) -> list[Msg]:
    """A fetch as the consumer hands it over: partitions interleaved."""
    return [Msg(p, o) for o in offsets for p in partitions]


def _applied(recorder: Recorder) -> list[Msg]:
    return [m for batch in recorder.batches for m in batch]


async def test_what_arrives_while_a_batch_is_busy_goes_next_in_one_batch() -> None:
    """Light load: less than a batch's worth waits, so no second batch starts; the
    waiting messages of every partition go together once the first batch ends."""
    apply = Recorder()
    lanes = PartitionLanes(apply, size=100, lanes=4)
    apply.gate.clear()
    lanes.add(_fetch(range(2), range(2)))
    await apply.until_held()
    lanes.add(_fetch(range(4), range(2, 5)))
    lanes.add([Msg(5, 0)])
    assert len(lanes.running) == 1 and lanes.waiting_count == 13
    apply.gate.set()
    await apply.until(17)  # nothing more is added: the gathered messages still go
    assert [len(b) for b in apply.batches] == [4, 13]
    assert not apply.overlapped


async def test_a_backlog_of_free_partitions_opens_more_batches_up_to_the_lanes() -> None:
    apply = Recorder()
    lanes = PartitionLanes(apply, size=2, lanes=2)  # spread at a batch's worth: 2
    apply.gate.clear()
    lanes.add([Msg(0, 0)])
    await apply.until_held()
    lanes.add([Msg(0, 1), Msg(0, 2), Msg(0, 3)])  # partition 0 is in flight: it waits
    assert len(lanes.running) == 1
    lanes.add([Msg(1, 0), Msg(2, 0)])  # two of free partitions: a second batch
    assert len(lanes.running) == 2 and lanes.busy == {0, 1, 2}
    lanes.add(_fetch(range(3, 9), range(2)))  # the lanes are taken: these wait
    assert len(lanes.running) == 2
    apply.gate.set()
    await apply.until(18)
    assert apply.overlapped
    for partition in range(9):
        offsets = [m.offset for m in _applied(apply) if m.partition == partition]
        assert offsets == sorted(offsets) and offsets == list(range(len(offsets)))


async def test_batches_hold_at_most_size_messages_in_offset_order() -> None:
    apply = Recorder()
    lanes = PartitionLanes(apply, size=3, lanes=1)
    apply.gate.clear()
    lanes.add([Msg(0, 0)])
    lanes.add([Msg(0, o) for o in range(1, 9)])
    apply.gate.set()
    await apply.until(9)
    assert [[m.offset for m in b] for b in apply.batches] == [[0], [1, 2, 3], [4, 5, 6], [7, 8]]


@pytest.mark.parametrize("seed", range(20))
async def test_no_partition_is_ever_in_two_batches_and_each_keeps_its_order(seed: int) -> None:
    """Random fetches and random database times: every message is applied once, in offset
    order per partition, and batches that overlap share no partition."""
    rng = random.Random(seed)
    in_flight: set[int] = set()
    applied: list[Msg] = []
    overlaps = 0
    progress = asyncio.Condition()

    async def apply(batch: list[Msg]) -> None:
        nonlocal overlaps
        partitions = {m.partition for m in batch}
        assert not partitions & in_flight, "a partition in two batches at once"
        overlaps += bool(in_flight)
        in_flight.update(partitions)
        await asyncio.sleep(rng.random() / 500)
        in_flight.difference_update(partitions)
        applied.extend(batch)
        async with progress:
            progress.notify_all()

    lanes = PartitionLanes(apply, size=rng.choice([4, 8, 50]), lanes=rng.choice([1, 2, 4]))
    next_offset = [0] * 8
    for _ in range(60):
        fetch = []
        for partition in rng.sample(range(8), rng.randint(1, 8)):
            for _ in range(rng.randint(0, 12)):
                fetch.append(Msg(partition, next_offset[partition]))
                next_offset[partition] += 1
        lanes.add(fetch)
        await asyncio.sleep(rng.random() / 1000)
    async with asyncio.timeout(10), progress:
        await progress.wait_for(lambda: len(applied) >= sum(next_offset))
    for partition in range(8):
        assert [m.offset for m in applied if m.partition == partition] == list(
            range(next_offset[partition])
        )
    assert overlaps == 0 or lanes.lanes > 1


async def test_full_is_told_of_each_addition_and_room_once_it_drains() -> None:
    apply = Recorder()
    told: list[object] = []
    lanes = PartitionLanes(
        apply, size=2, lanes=1, on_full=told.append, on_room=lambda: told.append("room")
    )
    apply.gate.clear()
    lanes.add([Msg(0, 1)])  # goes at once: nothing waits
    lanes.add([Msg(0, 2)])
    assert told == []
    lanes.add([Msg(0, 3), Msg(0, 4)])  # two wait: the lanes' worth
    lanes.add([Msg(0, 5)])
    assert told == [[Msg(0, 3), Msg(0, 4)], [Msg(0, 5)]]
    apply.gate.set()
    await apply.until(5)
    assert told[-1] == "room" and told.count("room") == 1
    assert [[m.offset for m in b] for b in apply.batches] == [[1], [2, 3], [4, 5]]


async def test_a_failed_batch_stops_new_batches_and_its_error_reaches_the_caller() -> None:
    applied: list[list[Msg]] = []

    async def apply(batch: list[Msg]) -> None:
        if batch == [Msg(0, 1)]:
            raise RuntimeError("database gone")
        applied.append(batch)

    lanes = PartitionLanes(apply, size=10, lanes=2)
    lanes.add([Msg(0, 1)])
    await asyncio.wait(set(lanes.running))
    with pytest.raises(RuntimeError, match="database gone"):
        lanes.add([Msg(1, 1)])
    assert applied == [] and not lanes.running


async def test_cancel_stops_every_running_batch() -> None:
    apply = Recorder()
    lanes = PartitionLanes(apply, size=1, lanes=2)  # spread at 1
    apply.gate.clear()
    lanes.add([Msg(0, 0)])
    lanes.add([Msg(1, 0)])
    running = set(lanes.running)
    assert len(running) == 2
    lanes.cancel()
    for batch in running:
        with pytest.raises(asyncio.CancelledError):
            await batch
    await asyncio.sleep(0)  # the batches' done callbacks
    assert apply.batches == [] and not lanes.running and not lanes.busy


def test_postgresql_gets_the_lanes_asked_for_and_sqlite_one_with_a_pool_to_match() -> None:
    postgres = Settings(database_url="postgresql://u@localhost/db", input_lanes=3)
    assert postgres.lanes_per_input == 3
    assert postgres.input_pool_size == 3 * 3  # no lane ever waits for a connection
    sqlite = Settings(database_url="sqlite:///var/x.sqlite3", input_lanes=3)
    assert sqlite.lanes_per_input == 1
    assert Settings().input_lanes == 4
