"""Metrics helpers that reach into prometheus_client: held to its own public behaviour."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.runtime.metrics import LATENCY_BUCKETS, observe_each, observe_many


def samples(
    record: str, value: float, times: int, values: tuple[float, ...] = ()
) -> dict[str, float]:
    """Bucket counts, count and sum as exposed (the creation time differs: left out)."""
    registry = CollectorRegistry()
    child = Histogram("h", "h", ["s"], buckets=LATENCY_BUCKETS, registry=registry).labels("a")
    if record == "loop":
        for v in [value] * times + list(values):
            child.observe(v)
    elif record == "each":
        observe_each(child, values)
    else:
        observe_many(child, value, times)
    text = generate_latest(registry).decode()
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize("value", [0.0, 0.005, 0.12, 0.25, 7.0, 301.0])
@pytest.mark.parametrize("times", [0, 1, 37])
def test_observe_many_records_what_a_loop_of_observe_records(value: float, times: int) -> None:
    many, loop = samples("many", value, times), samples("loop", value, times)
    assert many.pop("h_sum") == pytest.approx(loop.pop("h_sum"))
    assert many == loop
    assert loop["h_count"] == times


@pytest.mark.parametrize(
    "values",
    [
        [],
        [0.0],
        [0.005, 0.0051, 0.25, 0.2500001, 7.0, 301.0, 1e9],
        [0.001 * i for i in range(700)],  # every bucket, bounds included
    ],
)
def test_observe_each_records_what_a_loop_of_observe_records(values: list[float]) -> None:
    each, loop = samples("each", 0.0, 0, tuple(values)), samples("loop", 0.0, 0, tuple(values))
    assert each.pop("h_sum") == pytest.approx(loop.pop("h_sum"))
    assert each == loop
    assert loop["h_count"] == len(values)
