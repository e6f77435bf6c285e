"""A read-only slice of the ClickHouse HTTP interface over the embedded chDB store.

chDB cannot open ClickHouse's own listeners, and only the worker process may
own the store, so the worker serves this: GET/POST with `query`, a POST body,
`default_format`, `database`, `param_*` query parameters and a FORMAT clause,
URL settings that only lower a limit, HTTP response compression when asked,
answered by the engine itself in the requested format. curl, `llmops sql`,
Grafana and clickhouse-connect's HTTP client can read the store while the
pipeline runs.

This module is the HTTP side only: who may ask (optional credentials as
ClickHouse takes them, optional TLS) and how answers look (ClickHouse's
headers and `Code: N. DB::Exception: … (NAME)` errors). What a query may do
is decided by `llmops.sql_guard` on the engine's parse, and the limits and
the bounded wait by `llmops.sql_engine`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import math
import ssl
import uuid
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from llmops.config import Settings
from llmops.native_format import NativeTypeUnsupported, for_client_revision
from llmops.sql_engine import LIMIT_SETTINGS, EngineBusy, QueryLimits, SqlEngine, engine_path
from llmops.sql_guard import QueryRefused
from llmops.stack_state import STORE_ID_HEADER, store_id

__all__ = ["SqlEndpoint"]

log = logging.getLogger(__name__)

# URL parameters HTTP clients send about the transport or the session; they change no
# engine setting here, so they are accepted and ignored (clickhouse-connect, clickhouse-go).
_TRANSPORT_PARAMS = {
    "query", "default_format", "database", "user", "password", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "enable_http_compression", "wait_end_of_query", "readonly",
    "buffer_size", "http_response_buffer_size", "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "quota_key", "client_protocol_version", "cancel_http_readonly_queries_on_client_close", "send_profile_events",
}  # fmt: skip
# Besides those, the settings in llmops.sql_engine.LIMIT_SETTINGS: they can only lower a limit. clickhouse-go
# sends max_execution_time with every query (its context deadline + 5 s; Grafana's plugin: the query timeout),
# so a value above the endpoint's cap is accepted and the cap applies; 0 ("no limit") is refused.
_CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
# As ClickHouse's HTTP handler maps them: what the client got wrong is 4xx, the rest 500.
_STATUS = {
    516: 401,
    164: 403,
    497: 403,
    62: 400,
    36: 400,
    72: 400,
    47: 400,
    46: 400,
    60: 404,
    81: 404,
    73: 400,
    457: 400,
    202: 503,
}


def _error(code: int, name: str, message: str, query_id: str = "") -> web.Response:
    text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message.rstrip('.')}. ({name})"
    headers = {"X-ClickHouse-Exception-Code": str(code)}
    if query_id:
        headers["X-ClickHouse-Query-Id"] = query_id
    return web.Response(status=_STATUS.get(code, 500), text=text.strip() + "\n", headers=headers)


class SqlEndpoint:
    def __init__(
        self,
        dsn: str,
        database: str,
        host: str,
        port: int,
        *,
        limits: QueryLimits | None = None,
        max_concurrent_queries: int = 2,
        max_queued_queries: int = 8,
        queue_timeout_s: float = 5.0,
        user: str = "default",
        password: SecretStr | None = None,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
    ) -> None:
        self._engine = SqlEngine(
            engine_path(dsn),
            database,
            limits or QueryLimits(),
            max_concurrent_queries=max_concurrent_queries,
            max_queued_queries=max_queued_queries,
            queue_timeout_s=queue_timeout_s,
        )
        self._store_id = store_id(engine_path(dsn))
        self._database = database
        self._host = host
        self._port = port
        self._user = user
        self._password = password
        self._tls = (tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlEndpoint:
        """The endpoint `llmops.config.Settings` describe (its `sql` section, the store, the listen address)."""
        sql = settings.sql
        limits = QueryLimits(sql.max_execution_time_s, sql.max_result_rows, sql.max_result_bytes, sql.max_memory_usage)
        return cls(
            settings.clickhouse_dsn,
            settings.clickhouse.database,
            settings.receiver.listen,
            sql.port,
            limits=limits,
            max_concurrent_queries=sql.max_concurrent_queries,
            max_queued_queries=sql.max_queued_queries,
            queue_timeout_s=sql.queue_timeout_s,
            user=sql.user,
            password=sql.password,
            tls_cert_file=sql.tls_cert_file,
            tls_key_file=sql.tls_key_file,
        )

    async def start(self) -> None:
        self._engine.open()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/ping", self._ping)
        app.router.add_route("*", "/", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self._tls[0]), str(self._tls[1]))
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=context)
        await site.start()
        addresses = self._runner.addresses  # (host, port, ...) of the bound sockets: the port when 0 was asked
        self.port = addresses[0][1] if addresses else self._port
        log.info("sql endpoint listening", extra={"host": self._host, "port": self.port, "tls": context is not None})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._engine.close()

    async def _ping(self, request: web.Request) -> web.Response:
        # Which store this is, so `llmops report` & co. never read another data dir's stack (llmops.store).
        return web.Response(text="Ok.\n", headers={STORE_ID_HEADER: self._store_id})

    def _authorised(self, request: web.Request) -> bool:
        """Credentials as ClickHouse takes them: basic auth, X-ClickHouse-User/Key headers,
        or user/password parameters."""
        if self._password is None:
            return True
        user = request.headers.get("X-ClickHouse-User") or request.query.get("user")
        key = request.headers.get("X-ClickHouse-Key") or request.query.get("password")
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, key = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
        if user is None or key is None:
            return False
        user_ok = hmac.compare_digest(user.encode(), self._user.encode())
        key_ok = hmac.compare_digest(key.encode(), self._password.get_secret_value().encode())
        return user_ok and key_ok

    async def _query(self, request: web.Request) -> web.Response:
        query_id = request.query.get("query_id") or str(uuid.uuid4())
        if request.method not in ("GET", "POST"):
            return web.Response(status=405, text="only GET and POST\n")
        if not self._authorised(request):
            return _error(
                516,
                "AUTHENTICATION_FAILED",
                "Authentication failed: password is incorrect, or there is no user with such name",
            )
        params = request.query
        sql = params.get("query", "")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if request.method == "POST" and request.can_read_body and encoding not in ("", "identity"):
            # ClickHouse clients compress insert bodies only; a query is a few hundred bytes.
            return _error(
                36,
                "BAD_ARGUMENTS",
                f"Content-Encoding {encoding} is not accepted here: send the query uncompressed",
                query_id,
            )
        if params.get("compress", "0") != "0":
            return _error(
                36,
                "BAD_ARGUMENTS",
                "compress=1 (ClickHouse's block compression) is not served here: use HTTP compression "
                "(enable_http_compression=1 with Accept-Encoding: gzip)",
                query_id,
            )
        if request.method == "POST" and request.can_read_body:
            posted = (await request.read()).decode("utf-8", errors="replace")
            sql = f"{sql}\n{posted}" if sql else posted
        database = params.get("database") or request.headers.get("X-ClickHouse-Database") or self._database
        if database != self._database:
            return _error(
                497, "ACCESS_DENIED", f"Database {database} is not served here: only {self._database}", query_id
            )
        settings = sorted(
            k for k in params if k not in _TRANSPORT_PARAMS and k not in LIMIT_SETTINGS and not k.startswith("param_")
        )
        if settings:
            return _error(
                164, "READONLY", f"Cannot modify '{settings[0]}' setting: this endpoint's settings are fixed", query_id
            )
        requested: dict[str, float] = {}
        for name in sorted(LIMIT_SETTINGS.keys() & params.keys()):
            try:
                value = float(params[name])
            except ValueError:
                return _error(
                    72, "CANNOT_PARSE_NUMBER", f"Setting {name}: cannot parse {params[name]!r} as a number", query_id
                )
            if not (math.isfinite(value) and value > 0):
                return _error(
                    164,
                    "READONLY",
                    f"Cannot modify '{name}' setting to {params[name]}: this endpoint only lowers its limits",
                    query_id,
                )
            requested[name] = value
        revision = params.get("client_protocol_version", "0")
        if not revision.isdigit():
            return _error(
                72, "CANNOT_PARSE_NUMBER", f"client_protocol_version: cannot parse {revision!r} as a number", query_id
            )
        parameters = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
        limits = self._engine.limits.tightened(requested)
        try:
            body, fmt = await self._engine.execute(
                sql, params.get("default_format", "TabSeparated"), parameters, limits
            )
        except QueryRefused as refused:
            return _error(refused.code, refused.name, str(refused), query_id)
        except EngineBusy as busy:
            return _error(
                202, "TOO_MANY_SIMULTANEOUS_QUERIES", f"Too many simultaneous queries: {busy}; retry later", query_id
            )
        except Exception as exc:  # the engine's message is the answer, as ClickHouse's own server does
            text = str(exc)
            text = text[text.find("Code: ") :] if "Code: " in text else text
            code = text[6:].split(".", 1)[0] if text.startswith("Code: ") else ""
            return _error(int(code) if code.isdigit() else 1001, "STD_EXCEPTION", text, query_id)
        if fmt == "Native" and int(revision) > 0:  # the layout clickhouse-go reads (llmops.native_format)
            try:
                body = await asyncio.to_thread(for_client_revision, body, int(revision))
            except NativeTypeUnsupported as unsupported:
                return _error(50, "UNKNOWN_TYPE", str(unsupported), query_id)
        response = web.Response(
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
        if params.get("enable_http_compression") == "1":
            # As ClickHouse: compressed only when asked by both the setting and Accept-Encoding (gzip, deflate;
            # aiohttp picks). clickhouse-go's HTTP reader inflates by Content-Encoding and reads anything else raw.
            response.enable_compression()
        return response
