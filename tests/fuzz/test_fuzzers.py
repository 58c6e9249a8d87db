"""The fuzzers as tests: a bounded run of each over its committed seeds finds nothing, and
the decoders' seeds are the hostile messages of ``tests/helpers/hostile.py``."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import hostile

HERE = Path(__file__).parent
DICTIONARY = HERE / "decoders.dict"
FUZZ_SECONDS = 20


def test_the_seed_corpus_is_the_hostile_messages(tmp_path: Path) -> None:
    """Regenerate with ``python -m tests.helpers.hostile`` after changing the messages."""
    hostile.write_corpus(tmp_path)
    expected = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    committed = {p.name: p.read_bytes() for p in hostile.CORPUS.iterdir()}
    assert committed == expected


FUZZERS = {
    "decoders": (HERE / "fuzz_decoders.py", hostile.CORPUS, [f"-dict={DICTIONARY}"]),
    "http": (HERE / "fuzz_http.py", HERE / "corpus" / "http", []),
}


@pytest.mark.parametrize("target", sorted(FUZZERS))
def test_every_seed_passes_the_fuzz_invariants(target: str) -> None:
    """Each fuzzer's own check over its seeds, without atheris's instrumentation (the HTTP
    seeds hold the cursors and ``next=`` values of issue 24: times with no UTC form, CR/LF)."""
    pytest.importorskip("atheris")
    fuzzer, seeds, _ = FUZZERS[target]
    spec = importlib.util.spec_from_file_location(f"fuzz_{target}", fuzzer)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for seed in sorted(seeds.iterdir()):
        module.check(seed.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(FUZZERS))
def test_fuzzing_for_a_while_finds_nothing(tmp_path: Path, target: str) -> None:
    """The decoders and the HTTP boundary (path, cookie, token, CSRF field, form and JSON
    bodies), each for a bounded time from its committed corpus."""
    pytest.importorskip("atheris", reason="pip install atheris (or '.[fuzz]')")
    fuzzer, seeds, extra = FUZZERS[target]
    corpus = tmp_path / "corpus"
    shutil.copytree(seeds, corpus)  # libFuzzer writes into its corpus directory
    proc = subprocess.run(
        [
            sys.executable,
            str(fuzzer),
            f"-max_total_time={FUZZ_SECONDS}",
            *extra,
            f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("crash-"))
    assert proc.returncode == 0, f"{crashes}\n{proc.stderr[-4000:]}"
    assert "Done" in proc.stderr  # the fuzzer ran to its time limit
