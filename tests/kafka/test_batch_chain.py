"""BatchChain: batches one after another, gathering while the database is busy."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.batches import Recorder
from worker.kafka.batch_chain import BatchChain


async def test_what_arrives_while_a_batch_is_busy_goes_next_in_one_batch() -> None:
    apply = Recorder()
    chain = BatchChain(apply, size=100)
    apply.gate.clear()
    chain.add([1, 2])
    chain.add([3])
    chain.add([4, 5])
    await apply.until_held()  # the first batch is in the database, the rest gathered
    assert apply.batches == []
    assert chain.gathered == [3, 4, 5]
    apply.gate.set()
    await apply.until(5)  # nothing more is added: the gathered items still go
    assert apply.batches == [[1, 2], [3, 4, 5]]
    assert not apply.overlapped


async def test_batches_hold_at_most_size_items_in_order() -> None:
    apply = Recorder()
    chain = BatchChain(apply, size=3)
    apply.gate.clear()
    chain.add([0])
    chain.add(list(range(1, 9)))
    apply.gate.set()
    await apply.until(9)
    assert apply.batches == [[0], [1, 2, 3], [4, 5, 6], [7, 8]]
    assert not apply.overlapped


async def test_full_is_told_of_each_addition_and_room_once_it_drains() -> None:
    apply = Recorder()
    told: list[object] = []
    chain = BatchChain(apply, size=2, on_full=told.append, on_room=lambda: told.append("room"))
    apply.gate.clear()
    chain.add([1])  # goes at once: nothing waits
    chain.add([2])
    assert told == []
    chain.add([3, 4])  # two wait: a batch's worth
    chain.add([5])
    assert told == [[3, 4], [5]]
    apply.gate.set()
    await apply.until(5)
    assert told == [[3, 4], [5], "room"]
    assert apply.batches == [[1], [2, 3], [4, 5]]


async def test_a_failed_batch_stops_the_chain_and_its_error_reaches_the_caller() -> None:
    applied: list[list[int]] = []

    async def apply(batch: list[int]) -> None:
        if batch == [1]:
            raise RuntimeError("database gone")
        applied.append(batch)

    chain = BatchChain(apply, size=10)
    chain.add([1])
    assert chain.running is not None
    await asyncio.wait([chain.running])
    with pytest.raises(RuntimeError, match="database gone"):
        chain.add([2])
    assert applied == []
