"""The test session's environment, kept apart from the shell it was started from.

A developer who runs the worker on their workstation may well have its settings
(``WB_DATABASE_URL``, ``WB_KAFKA_SECURITY_PROTOCOL``...) and libpq's (``PGHOST``,
``PGPORT``, ``PGSSLMODE``...) exported for their own servers, and a web proxy. The suite
starts its own PostgreSQL, brokers and workers on loopback, and its workers and tools
inherit the session's environment. Inherited, those variables pointed the suite's workers
at the user's servers, changed what the tests' settings meant, and made the private
cluster's readiness check ask it for TLS it does not offer (30 s, then a fallback server
that ``PGPORT`` sent to a socket that does not exist): with a production-like shell the
fast tests gave 5 failures (``WB_*``) and 254 errors (``PG*``).

So the session drops the worker's settings (the ``Settings`` fields' variables; the test
knobs, ``WB_TEST_*`` and the others no setting reads, stay) and every ``PG*`` variable,
and reaches loopback without a proxy.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from worker.settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def worker_setting_variables() -> set[str]:
    """The environment variables the worker's settings read."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def isolate_from_the_shell(environ: MutableMapping[str, str]) -> list[str]:
    """Drop what would make the suite depend on the shell it runs in (see the module's
    docstring) from ``environ``; returns the names dropped, sorted."""
    settings = worker_setting_variables()
    dropped = sorted(name for name in environ if name in settings or name.startswith("PG"))
    for name in dropped:
        del environ[name]
    for name in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in environ.get(name, "").split(",") if h]
        environ[name] = ",".join([*hosts, *(h for h in LOOPBACK_HOSTS if h not in hosts)])
    return dropped
