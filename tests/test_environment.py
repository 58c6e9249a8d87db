"""The test command runs the same from a shell set up for the user's own servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.environment import isolate_from_the_shell

ROOT = Path(__file__).resolve().parents[1]
# What a workstation that runs the worker against managed services may export.
PRODUCTION_SHELL = {
    "WB_DATABASE_URL": "postgresql+asyncpg://app@127.0.0.1:1/prod",
    "WB_KAFKA_BROKER": "kafka://127.0.0.1:1",
    "WB_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "WB_REGEN_SETTLE": "30",
    "WB_BATCH_SIZE": "50",
    "PGHOST": "db.example.invalid",
    "PGPORT": "6432",
    "PGSSLMODE": "require",
    "http_proxy": "http://127.0.0.1:9",
}


def test_the_worker_settings_and_libpq_variables_are_dropped_and_test_knobs_kept() -> None:
    environ = {
        **PRODUCTION_SHELL,
        "WB_TEST_PG_BINDIR": "/opt/pg/bin",
        "WB_KAFKA_CLASSPATH_FILE": "/tmp/cp.txt",
        "PATH": "/usr/bin",
        "no_proxy": "internal.example",
    }
    dropped = isolate_from_the_shell(environ)
    assert dropped == sorted(k for k in PRODUCTION_SHELL if k.startswith(("WB_", "PG")))
    assert environ["WB_TEST_PG_BINDIR"] == "/opt/pg/bin"
    assert environ["WB_KAFKA_CLASSPATH_FILE"] == "/tmp/cp.txt"
    assert environ["PATH"] == "/usr/bin"
    assert environ["no_proxy"] == "internal.example,127.0.0.1,localhost,::1"
    assert environ["NO_PROXY"] == "127.0.0.1,localhost,::1"
    assert isolate_from_the_shell(environ) == []  # twice changes nothing
    assert environ["no_proxy"] == "internal.example,127.0.0.1,localhost,::1"


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_tests_pass_from_a_shell_exported_for_production() -> None:
    # A session of its own: its private cluster's readiness check once asked for TLS
    # (PGSSLMODE) and its fallback's socket followed PGPORT.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/storage/test_pgarray.py",
        ],
        env={**os.environ, **PRODUCTION_SHELL},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "error" not in done.stdout.lower()
