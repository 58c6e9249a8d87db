"""The statements an engine's connections send, however they are sent: through
SQLAlchemy, or by asyncpg itself inside the session's transaction
(``worker.storage.driver_rows``). Transaction control (BEGIN, COMMIT, ROLLBACK) is not
counted: it was never a cursor statement; nor is asyncpg's own type introspection on a
new connection."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")
# asyncpg's own type introspection, once per connection and type (JIT off around it).
_INTROSPECTION = ("typeinfo_tree", "set_config('jit'", "current_setting('jit')")


class StatementsSent:
    """A context manager: ``seen`` lists the statements sent while it is open."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine, self.seen = engine, list[str]()
        self._drivers: set[Any] = set()

    def __enter__(self) -> StatementsSent:
        sync = self.engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._through_sqlalchemy)
        event.listen(sync, "checkout", self._watch_driver)
        return self

    def __exit__(self, *exc: object) -> None:
        sync = self.engine.sync_engine
        event.remove(sync, "before_cursor_execute", self._through_sqlalchemy)
        event.remove(sync, "checkout", self._watch_driver)
        for driver in self._drivers:
            driver.remove_query_logger(self._by_the_driver)

    def _through_sqlalchemy(self, *args: Any) -> None:
        self.seen.append(args[2])

    def _watch_driver(self, dbapi_connection: Any, *_: Any) -> None:
        # asyncpg logs what its connection runs itself (not SQLAlchemy's prepared
        # statements, which the cursor event above counts).
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver not in self._drivers:
            self._drivers.add(driver)
            driver.add_query_logger(self._by_the_driver)

    def _by_the_driver(self, logged: Any) -> None:
        if a_statement(logged.query):
            self.seen.append(logged.query)


def a_statement(query: str) -> bool:
    """Whether asyncpg's query log entry ``query`` is a statement of the work: not the
    pool's ping (";"), transaction control, or asyncpg's own type introspection."""
    if not query.strip(" ;\n") or query.lstrip().upper().startswith(_CONTROL):
        return False
    return not any(marker in query for marker in _INTROSPECTION)
