"""The fault workload's own bookkeeping: a failed convergence must say where its
unprocessed events are, well enough to tell a hole in a partition from its tail."""

from __future__ import annotations

from tests.helpers.faults import Workload


def test_where_names_each_partition_s_unprocessed_offsets_and_its_last_produced() -> None:
    workload = Workload(seed=1, users=10, comments=20, results=2, requests=2, bad=1)
    workload.placed.clear()
    for i in range(10):
        workload.placed[f"c{i}"] = ("signal.comments", i % 2, 100 + i)
    workload.placed["r0"] = ("signal.requests", 0, 7)
    # c2 and c4 (partition 0) lie inside it, c9 (partition 1) is its last
    got = workload.where({"c2", "c4", "c9", "lost"})
    assert got == (
        "signal.comments[0] 2 at 102-104 (last produced 108), "
        "signal.comments[1] 1 at 109-109 (last produced 109), "
        "unsent[-1] 1 at -1--1 (last produced -1)"
    )
    assert workload.where(set()) == "none"
