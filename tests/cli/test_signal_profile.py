"""``wb signal-profile audit``: one user's audit log, as lines or JSON, newest first."""

from __future__ import annotations

import json

from tests.helpers.cli import wb


def test_audit_lists_a_users_changes_newest_first(sqlite_env: dict[str, str]) -> None:
    for args in (["override", "4", "--text", "hi"], ["clear-override", "4"]):
        done = wb("signal-profile", *args, "--actor", "alice", "--note", "why", env=sqlite_env)
        assert done.returncode == 0, done.stderr

    lines = wb("signal-profile", "audit", "4", env=sqlite_env).stdout.splitlines()
    assert [line.split("  ")[1:4] for line in lines] == [
        ["alice", "clear_override", "why"],
        ["alice", "set_override", "why"],
    ]
    assert lines[1].endswith("override_text: None -> 'hi'")

    entries = json.loads(
        wb("signal-profile", "audit", "4", "--limit", "1", "--json", env=sqlite_env).stdout
    )
    assert [e["action"] for e in entries] == ["clear_override"]
    assert entries[0]["diff"]["manual_override"] == {"old": True, "new": False}

    nothing = wb("signal-profile", "audit", "5", env=sqlite_env)
    assert (nothing.returncode, nothing.stdout) == (0, "no audit entries for user 5\n")
