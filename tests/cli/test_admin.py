"""``wb admin``: a token is printed once, listed by id, revoked once."""

from __future__ import annotations

from tests.helpers.cli import wb


def test_a_token_is_created_listed_and_revoked_once(sqlite_env: dict[str, str]) -> None:
    created = wb("admin", "create-token", "--actor", "alice", "--role", "viewer", env=sqlite_env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token and "\n" not in token  # the token alone on stdout, for scripts
    assert created.stderr == "token 1 for alice (viewer); it is not shown again\n"

    [listed] = wb("admin", "list-tokens", env=sqlite_env).stdout.splitlines()
    assert listed.split("\t")[:3] == ["1", "alice", "viewer"]
    assert listed.endswith("\tactive") and token not in listed

    revoked = wb("admin", "revoke-token", "1", env=sqlite_env)
    assert (revoked.returncode, revoked.stdout) == (0, "token 1 revoked\n")
    again = wb("admin", "revoke-token", "1", env=sqlite_env)
    assert (again.returncode, again.stderr) == (1, "wb: error: no active token 1\n")
    [listed] = wb("admin", "list-tokens", env=sqlite_env).stdout.splitlines()
    assert listed.split("\t")[4].startswith("revoked ")
