"""`llmops sql`: one read-only query, checked by the same guard and limits as the SQL endpoint.

While a worker serves the embedded store, the query goes to its endpoint
(which checks it). When nothing serves it, the command opens the store
itself and runs the query through the same `SqlEngine` the endpoint uses, so
the policy is the same either way. A server DSN is read through
clickhouse-connect with `readonly=1`; the server's own grants decide there.
"""

from __future__ import annotations

import sys

from llmops.config import Settings
from llmops.sql_engine import QueryLimits, SqlEngine, engine_path
from llmops.sql_guard import QueryRefused
from llmops.store import endpoint_alive, local_host, open_reader

__all__ = ["run_sql_command"]


def run_sql_command(settings: Settings, query: str, fmt: str) -> int:
    sql = settings.sql
    served = endpoint_alive(local_host(settings.receiver.listen), sql.port, tls_ca=sql.tls_cert_file)
    try:
        if settings.embedded_store and not served:
            limits = QueryLimits(sql.max_execution_time_s, sql.max_result_rows, sql.max_result_bytes, sql.max_memory_usage)
            engine = SqlEngine(engine_path(settings.clickhouse_dsn), settings.clickhouse.database, limits, max_concurrent_queries=1)
            engine.open()
            try:
                body, _ = engine.run_now(query, fmt)
            finally:
                engine.close()
        else:
            body = open_reader(settings).raw_query(query, fmt=fmt)
    except QueryRefused as refused:
        print(f"llmops sql: {refused}", file=sys.stderr)
        return 2
    except Exception as exc:  # the engine's or the endpoint's one-line message is the answer
        text = str(exc)
        print("llmops sql: " + (text[text.find("Code: ") :] if "Code: " in text else text).strip().splitlines()[0], file=sys.stderr)
        return 1
    sys.stdout.write(body.decode(errors="replace"))
    return 0
