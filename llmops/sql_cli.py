"""`llmops sql "…"`: one read-only query on the data dir's store, checked by the same guard and limits as the
SQL endpoint.

While the data dir's stack (or a worker) serves the embedded store, the query
goes to its endpoint (which checks it); llmops.store finds that endpoint and
refuses one that serves another store. When nothing serves it, the command
opens the store itself and runs the query through the same `SqlEngine` the
endpoint uses, so the policy is the same either way. A server DSN is read
through clickhouse-connect with `readonly=1`; the server's own grants decide
there. A refused or failing query is the guard's or ClickHouse's own message
on one line: exit 2 for a query the guard refuses or the parser cannot read,
1 for one the engine or the endpoint refuses at run time (rights, limits).
"""

from __future__ import annotations

import re

from llmops.config import Settings
from llmops.errors import UsageError, UserError, clickhouse_code, clickhouse_message
from llmops.sql_engine import QueryLimits, SqlEngine, engine_path
from llmops.sql_guard import QueryRefused
from llmops.store import close_reader, find_endpoint, open_reader, require_store

__all__ = ["run_sql"]

# The rule both transports apply (clickhouse-connect's chDB backend and the endpoint): a FORMAT clause at the
# very end of the statement picks the output format, so the client must not append a second one.
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)
_SYNTAX_ERROR = 62
_IN_WRAPPER = re.compile(r":? In scope SELECT formatQuery\(.*\)\.(?= \(SYNTAX_ERROR\))")


def run_sql(settings: Settings, query: str, fmt: str) -> str:
    """The query's output as text; UsageError for a refused or unparsable query, UserError for a run-time refusal."""
    try:
        if settings.embedded_store and find_endpoint(settings) is None:
            body = _run_on_store(settings, query, fmt)
        else:
            body = _run_on_endpoint(settings, query, fmt)
    except QueryRefused as refused:  # the guard's verdict, or the parser's error it passes on
        raise UsageError(_IN_WRAPPER.sub(".", clickhouse_message(refused))) from refused
    except Exception as exc:
        code = clickhouse_code(exc)
        if code is None:
            raise
        error = UsageError if code == _SYNTAX_ERROR else UserError
        raise error(_IN_WRAPPER.sub(".", clickhouse_message(exc))) from exc
    return body.decode(errors="replace")


def _run_on_store(settings: Settings, query: str, fmt: str) -> bytes:
    """No endpoint serves the store: open it here with the endpoint's engine (guard and limits);
    it reads a FORMAT clause itself."""
    require_store(settings)
    sql = settings.sql
    limits = QueryLimits(sql.max_execution_time_s, sql.max_result_rows, sql.max_result_bytes, sql.max_memory_usage)
    engine = SqlEngine(
        engine_path(settings.clickhouse_dsn), settings.clickhouse.database, limits, max_concurrent_queries=1
    )
    engine.open()
    try:
        body, _ = engine.run_now(query, fmt)
    finally:
        engine.close()
    return body


def _run_on_endpoint(settings: Settings, query: str, fmt: str) -> bytes:
    reader = open_reader(settings)
    try:
        # Parse first, with ClickHouse's own parser, so a syntax error points into the user's text,
        # not at the FORMAT clause the client appends.
        reader.query("SELECT formatQuery({q:String})", parameters={"q": query})
        explicit = _TRAILING_FORMAT.search(query) is not None
        return reader.raw_query(query, fmt=None if explicit else fmt)
    finally:
        close_reader(reader)
