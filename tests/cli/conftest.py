"""Fixtures of the ``wb`` tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import wb


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """A migrated SQLite database of the test's own, as ``wb``'s environment."""
    env = {"WB_DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3"}
    assert wb("db", "upgrade", env=env).returncode == 0
    return env
