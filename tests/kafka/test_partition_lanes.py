"""PartitionLanes: a topic's partitions dealt to chains that run at once, order per
partition kept."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pytest

from tests.helpers.batches import Recorder
from worker.kafka.batch_chain import BatchChain
from worker.kafka.partition_lanes import PartitionLanes, lane_of
from worker.settings import Settings


class Msg(NamedTuple):
    partition: int
    offset: int


def _lanes(count: int, size: int = 100) -> tuple[PartitionLanes[Msg], list[Recorder]]:
    recorders = [Recorder() for _ in range(count)]
    return PartitionLanes([BatchChain(r, size=size) for r in recorders]), recorders


def _fetch(partitions: range, offsets: range) -> list[Msg]:
    """A fetch as the consumer hands it over: partitions interleaved."""
    return [Msg(p, o) for o in offsets for p in partitions]


async def test_each_partition_goes_to_one_lane_in_offset_order() -> None:
    lanes, recorders = _lanes(2, size=7)
    lanes.add(_fetch(range(4), range(10)))
    lanes.add(_fetch(range(4), range(10, 15)))
    for recorder in recorders:
        await recorder.until(30)
    for index, recorder in enumerate(recorders):
        applied = [m for batch in recorder.batches for m in batch]
        assert {lane_of(m.partition, 2) for m in applied} == {index}
        for partition in {m.partition for m in applied}:
            offsets = [m.offset for m in applied if m.partition == partition]
            assert offsets == list(range(15))
        assert max(map(len, recorder.batches)) <= 7


@pytest.mark.parametrize(
    ("lanes", "workers", "partitions"), [(4, 1, 4), (4, 2, 4), (4, 2, 16), (4, 4, 16), (4, 16, 64)]
)
def test_a_round_robin_share_of_the_partitions_uses_every_lane_it_can(
    lanes: int, workers: int, partitions: int
) -> None:
    """A worker of a group holds every workers-th partition (round-robin assignors): its
    partitions spread over min(lanes, its partitions) lanes, not one (``partition % 4``
    put 4 workers' 16 partitions each in a single lane)."""
    for worker in range(workers):
        mine = range(worker, partitions, workers)
        assert len({lane_of(p, lanes) for p in mine}) == min(lanes, len(mine))


def test_lanes_are_a_function_of_the_partition_alone() -> None:
    assert [lane_of(p, 4) for p in range(4)] == [0, 1, 2, 3]
    assert {lane_of(p, 1) for p in range(64)} == {0}
    assert all(0 <= lane_of(p, 3) < 3 for p in range(1000))


async def test_one_lane_is_one_chain_for_every_partition() -> None:
    lanes, (recorder,) = _lanes(1)
    fetch = _fetch(range(4), range(5))
    lanes.add(fetch)
    await recorder.until(20)
    assert [m for batch in recorder.batches for m in batch] == fetch


async def test_a_lane_held_in_the_database_does_not_hold_the_other() -> None:
    lanes, (held, free) = _lanes(2)
    held.gate.clear()
    lanes.add(_fetch(range(4), range(3)))
    await held.until_held()
    lanes.add(_fetch(range(4), range(3, 6)))
    await free.until(12)  # both of the free lane's batches, while the other's first waits
    assert held.batches == []
    assert held.active == 1
    held.gate.set()
    await held.until(12)
    assert not held.overlapped and not free.overlapped  # one batch at a time per lane


async def test_cancel_stops_every_lane() -> None:
    lanes, recorders = _lanes(2)
    for recorder in recorders:
        recorder.gate.clear()
    lanes.add(_fetch(range(2), range(2)))
    for recorder in recorders:
        await recorder.until_held()
    lanes.cancel()
    for lane in lanes.lanes:
        assert lane.running is not None
        with pytest.raises(asyncio.CancelledError):
            await lane.running
    assert all(recorder.batches == [] for recorder in recorders)


def test_postgresql_gets_the_lanes_asked_for_and_sqlite_one_with_a_pool_to_match() -> None:
    postgres = Settings(database_url="postgresql://u@localhost/db", input_lanes=3)
    assert postgres.lanes_per_input == 3
    assert postgres.input_pool_size == 3 * 3  # no lane ever waits for a connection
    sqlite = Settings(database_url="sqlite:///var/x.sqlite3", input_lanes=3)
    assert sqlite.lanes_per_input == 1
    assert Settings().input_lanes == 4
