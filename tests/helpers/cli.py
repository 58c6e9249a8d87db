"""Running the `wb` command as a user would: a real subprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.live import WB


def wb(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WB, *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
