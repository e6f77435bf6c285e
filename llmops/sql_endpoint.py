"""A read-only slice of the ClickHouse HTTP interface over the embedded chDB store.

chDB cannot open ClickHouse's own listeners, and only the worker process may
own the store, so the worker serves this: GET/POST with `query`, a POST body,
`default_format`, `database`, `param_*` query parameters and a trailing FORMAT
clause, answered by the engine itself in the requested format. curl,
`llmops sql`, Grafana and clickhouse-connect's HTTP client can read the store
while the pipeline runs. Writes are refused twice: by statement kind here and
by the engine (the handle runs with readonly=1).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from aiohttp import web

from sinks.clickhouse.client import connect

__all__ = ["SqlEndpoint", "is_read_only_statement"]

log = logging.getLogger(__name__)

_READ_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_COMMENT = re.compile(r"(--[^\n]*\n)|(/\*.*?\*/)", re.DOTALL)
_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_RESERVED_PARAMS = {
    "query", "default_format", "database", "user", "password", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "enable_http_compression", "wait_end_of_query", "readonly",
    "buffer_size", "http_response_buffer_size", "send_progress_in_http_headers", "quota_key",
}  # fmt: skip
_CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}


def is_read_only_statement(sql: str) -> bool:
    """True for one statement that can only read."""
    text = _COMMENT.sub(" ", sql).strip().rstrip(";").strip()
    if not text or ";" in text:
        return False
    first = text.split(None, 1)[0].upper().lstrip("(")
    return first in _READ_KEYWORDS and "INTO OUTFILE" not in text.upper()


class SqlEndpoint:
    def __init__(self, dsn: str, database: str, host: str, port: int) -> None:
        self._dsn = dsn
        self._database = database
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._client = None
        self._lock = asyncio.Lock()
        self.port: int | None = None

    async def start(self) -> None:
        self._client = connect(self._dsn, self._database, readonly=True)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/ping", self._ping)
        app.router.add_route("*", "/", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("sql endpoint listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def _query(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            return web.Response(status=405, text="only GET and POST\n")
        params = request.query
        sql = params.get("query", "")
        if request.method == "POST" and request.can_read_body:
            body = (await request.read()).decode("utf-8", errors="replace")
            sql = f"{sql}\n{body}" if sql else body
        if not sql.strip():
            return web.Response(status=400, text="Code: 62. Empty query. (SYNTAX_ERROR)\n")
        if not is_read_only_statement(sql):
            return web.Response(
                status=403,
                text="Code: 164. This endpoint is read-only: one SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS statement. (READONLY)\n",
                headers={"X-ClickHouse-Exception-Code": "164"},
            )
        match = _FORMAT.search(sql.strip())
        fmt = match.group(1) if match else params.get("default_format", "TabSeparated")
        if match:
            sql = sql.strip()[: match.start()].rstrip()
        sql = sql.strip().rstrip(";")
        parameters = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items() if k not in _RESERVED_PARAMS and not k.startswith("param_")}
        database = params.get("database") or request.headers.get("X-ClickHouse-Database") or self._database
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            async with self._lock:
                body = await asyncio.to_thread(self._run, sql, fmt, parameters, settings, database)
        except Exception as exc:  # the engine's message is the answer, as ClickHouse's own server does
            text = str(exc)
            code = re.search(r"Code: (\d+)", text)
            return web.Response(
                status=400 if code and code.group(1) in {"62", "47", "60", "81", "164"} else 500,
                text=text.strip() + "\n",
                headers={"X-ClickHouse-Exception-Code": code.group(1) if code else "1001", "X-ClickHouse-Query-Id": query_id},
            )
        return web.Response(
            body=body,
            headers={
                "Content-Type": _CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8"),
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Server-Display-Name": "llmops-chdb",
                "X-ClickHouse-Summary": '{"read_rows":"0","read_bytes":"0","written_rows":"0","written_bytes":"0"}',
            },
        )

    def _run(self, sql: str, fmt: str, parameters: dict, settings: dict, database: str) -> bytes:
        client = self._client
        assert client is not None
        client.database = database
        return client.raw_query(sql, parameters=parameters or None, settings=settings or None, fmt=fmt)
