"""The benchmark stays runnable: its modules import, and its decode line holds."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path


def test_bench_imports_and_shows_its_parts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for part in ("ingest", "latency", "sweep", "decode", "results", "mappings", "mixed"):
        assert part in done.stdout
    assert "--broker" in done.stdout and "kafka" in done.stdout
    import bench.streams  # the stream parts import only when run: import them here

    assert bench.streams.mixed_messages(100, 10, {"c": "c", "r": "r", "g": "g"})[1] == 100
    import bench.broker_floor  # imports only when the latency part runs
    import bench.latency_part
    import bench.lean  # the reference child module imports too

    assert bench.latency_part.VARIANTS


def test_the_latency_clock_pairs_each_comment_with_its_commit() -> None:
    """A notification names the ids one transaction committed; only the first counts, and
    a comment never seen committed is counted as unseen, not as a lag."""
    from bench.commit_latency import Clock, hot_users, own_users

    clock = Clock(sent={"a": 1.0, "b": 2.0, "c": 3.0})
    clock.on_notify(None, 0, "bench_claims", "a,b")
    first = clock.committed["a"]
    clock.on_notify(None, 0, "bench_claims", "a")
    assert clock.committed["a"] == first and clock.missing() == 1
    assert clock.lags(clock.sent) == sorted([first - 1.0, clock.committed["b"] - 2.0])
    assert own_users(10)(12) == (3, "3") and hot_users(5)(12) == (3, "k12")


def test_the_broker_floor_reads_the_broker_cpu_at_the_run_s_start_and_end() -> None:
    """The floor's CPU figures are the first and the last five seconds of the samples, not
    the run's mean: a broker whose work grows with its data shows it."""
    from bench.broker_floor import cores

    # one sample a second, the broker using 0.1 of a core more each second: 0.1, 0.2, ...
    samples, used = [], 0.0
    for second in range(21):
        samples.append((float(second), used))
        used += 0.1 * (second + 1)
    assert abs(cores(samples, first=True) - 0.3) < 1e-9  # seconds 0-5: (0.1 + ... + 0.5) / 5
    assert abs(cores(samples, first=False) - 1.8) < 1e-9  # seconds 15-20: (1.6 + ... + 2.0) / 5
    assert math.isnan(cores(samples[:1], first=True))  # too few to tell
    assert cores(samples[:4], first=True) == cores(samples[:4], first=False)  # a short run


def test_the_decode_line_measures_the_hostile_corpus_against_json_loads() -> None:
    """Its figures are the benchmark's to judge (timing is no unit test's business): here
    only that the line is made from the corpus and its reference."""
    from bench.decode_cost import decode_row

    name, measured, reference, target, verdict = decode_row()
    assert "hostile messages" in name and "us/KiB" in measured and "json.loads" in reference
    assert "json.loads" in target and verdict.split()[-1] in ("yes", "NO")


def test_the_profile_summary_sums_pyspy_stacks_by_owner_and_entry_point(tmp_path: Path) -> None:
    """``BENCH_PROFILE``'s py-spy file (collapsed stacks, one count a line) is summed by the
    innermost frame's package and the outermost known entry point."""
    import bench.shared_pieces  # noqa: F401  (run by hand: it only has to import)
    from bench.profile import summary

    raw = tmp_path / "x-pyspy.txt"
    raw.write_text(
        "thread (1): MainThread;handle (/w/worker/runtime/process.py:1);"
        "Runtime.handle (/w/worker/runtime/process.py:2);loads (/lib/python3.11/json/x.py:3) 3\n"
        "thread (2): Thread-1;_fetcher_routine (/v/site-packages/aiokafka/f.py:4) 1\n"
    )
    text = summary(raw)
    assert "4 samples" in text and "75.0%  json" in text and "25.0%  aiokafka" in text
    assert "75.0%  input batches" in text and "25.0%  consumer: fetch loop" in text
