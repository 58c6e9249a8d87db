"""The comment path's CPU per comment and rate before input snapshots and now, in one run
(issue 27: the snapshot work may cost at most 10 %).

    python -m bench.comment_cost postgresql://... [--before REF] [--pairs N]

``bench/compare_comments.py`` (in process, no broker, PostgreSQL's set-based path) runs
alternately on a copy of commit ``REF`` (default: the last commit before snapshots, taken
out with ``git archive`` into a temporary directory: nothing in the repository changes)
and on this checkout, ``pairs`` times each, in a database of its own that it empties each
time. Alternating, on one database server, is what makes the two comparable on a shared
machine; the figures are each side's median. Without git or the commit (a source archive)
the part says so and measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.harness import Row, log, ok

ROOT = Path(__file__).resolve().parent.parent
BEFORE_SNAPSHOTS = "616ffa4"  # main before input snapshots were merged (106cd9b)
LIMIT = 0.10  # issue 27


def checkout(ref: str) -> Path | None:
    """``ref``'s files in a temporary directory (the caller removes it), or None."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"comment cost: no checkout of {ref} ({exc})")
        return None
    tree = Path(tempfile.mkdtemp(prefix="wb-before-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def one_run(url: str, tree: Path) -> tuple[float, float]:
    """CPU microseconds per comment and comments a second, of ``tree``'s code."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare_comments.py"), url, "--json"],
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["cpu_us"], figures["rate"]


def measure(url: str, ref: str, pairs: int) -> dict[str, list[tuple[float, float]]] | None:
    """``pairs`` alternating runs of ``ref``'s code and this checkout's, or None."""
    before = checkout(ref)
    if before is None:
        return None
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
    try:
        for i in range(pairs):
            for side, tree in (("before", before), ("now", ROOT)):
                runs[side].append(one_run(url, tree))
                cpu, rate = runs[side][-1]
                log(f"comment cost {i + 1}/{pairs} {side}: {cpu:.1f} us, {rate:,.0f}/s")
    finally:
        shutil.rmtree(before, ignore_errors=True)
    return runs


def cost_rows(runs: dict[str, list[tuple[float, float]]] | None, ref: str) -> list[Row]:
    if runs is None:
        return [(f"comment CPU before snapshots ({ref})", "not measured", "-", "-", "-")]
    cpu = {side: statistics.median(c for c, _ in r) for side, r in runs.items()}
    rate = {side: statistics.median(r for _, r in rs) for side, rs in runs.items()}
    more = cpu["now"] / cpu["before"] - 1
    pairs = len(runs["now"])
    return [
        (
            f"comment CPU per event, in process ({pairs} pairs, medians)",
            f"{cpu['now']:.1f} us ({more:+.1%})",
            f"{cpu['before']:.1f} us ({ref})",
            f"<= +{LIMIT:.0%}",
            ok(more <= LIMIT),
        ),
        (
            "comment rate, in process",
            f"{rate['now']:,.0f}/s",
            f"{rate['before']:,.0f}/s ({ref})",
            "-",
            f"{rate['now'] / rate['before'] - 1:+.1%}",
        ),
    ]


async def comment_cost_rows(url: str, ref: str, pairs: int) -> list[Row]:
    """The part as ``python -m bench`` runs it (the runs are child processes)."""
    return cost_rows(await asyncio.to_thread(measure, url, ref, pairs), ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="postgresql://... (its public schema is dropped)")
    parser.add_argument("--before", default=BEFORE_SNAPSHOTS, help="git ref of 'before'")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    for row in cost_rows(measure(args.url, args.before, args.pairs), args.before):
        print(" | ".join(row))


if __name__ == "__main__":
    main()
