"""The benchmark stays runnable: its modules import, and its decode line holds."""

from __future__ import annotations

import subprocess
import sys


def test_bench_imports_and_shows_its_parts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for part in ("ingest", "latency", "sweep", "decode"):
        assert part in done.stdout


def test_decoding_the_hostile_corpus_costs_what_parsing_it_costs() -> None:
    from bench.__main__ import decode_row

    name, measured, reference, _, verdict = decode_row()
    assert "hostile messages" in name and "us/KiB" in measured and "json.loads" in reference
    assert verdict.endswith("yes"), (measured, reference)
