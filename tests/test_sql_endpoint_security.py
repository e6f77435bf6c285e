"""The SQL endpoint is read-only under attack (issue 14 §1): the guard on the engine's parse, the limits, auth, TLS.

One chDB store for the module (chDB hosts one engine path per process): the pipeline's
database `llmops`, plus a `default.secret` and an `other.data` table holding a marker no
allowed query may return. Every escape from the issue is tried against the guard on the
real engine, and each is first shown to work on a plain readonly=1 chDB handle, so the
tests fail if the guard stops refusing it. A hypothesis test varies the escapes
(whitespace, comments, case, quoting, nesting, UNION, WITH, FORMAT/SETTINGS) and checks
that no file is written, no connection is made and no other database is read.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import chdb
import clickhouse_connect
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from llmops.broker import free_port
from llmops.sql_endpoint import SqlEndpoint
from llmops.sql_engine import QueryLimits, SqlEngine, engine_path
from llmops.sql_guard import QueryRefused
from sinks.clickhouse.client import connect
from tests.conftest import wait_until
from tests.grafana_macros import render_alert_query, render_panel_query

SECRET = "TOPSECRET-4f1c"
LIMITS = QueryLimits(
    max_execution_time_s=2.0,
    max_result_rows=5_000,
    max_result_bytes=4 * 1024 * 1024,
    max_memory_usage=256 * 1024 * 1024,
)
SLOW_SQL = (
    "SELECT count() FROM system.functions AS a, system.functions AS b, system.functions AS c, system.functions AS d"
)


class Listener:
    """A loopback TCP listener that counts the connections it accepts (an SSRF probe)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("sqlsec")
    dsn = f"chdb://{root / 'clickhouse'}"
    writer = connect(dsn, "llmops", create_database=True)
    writer.command("CREATE TABLE IF NOT EXISTS llmops.t (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
    writer.command("INSERT INTO llmops.t SELECT number, toString(number) FROM numbers(100)")
    writer.command("CREATE TABLE IF NOT EXISTS llmops.big (n UInt64) ENGINE = MergeTree ORDER BY n")
    writer.command("INSERT INTO llmops.big SELECT number FROM numbers(20000)")
    writer.command("CREATE DATABASE IF NOT EXISTS other")
    for table in ("other.data", "default.secret"):
        writer.command(f"CREATE TABLE IF NOT EXISTS {table} (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
        writer.command(f"INSERT INTO {table} VALUES (1, '{SECRET}')")
    engine = SqlEngine(engine_path(dsn), "llmops", LIMITS, max_concurrent_queries=1)
    engine.open()
    files = root / "files"
    files.mkdir()
    yield {"dsn": dsn, "engine": engine, "files": files, "root": root}
    engine.close()
    writer.close()


@pytest.fixture(scope="module")
def listener() -> Listener:
    return Listener()


@pytest.fixture
def in_files_dir(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run with the files dir as working directory: a relative INTO OUTFILE would land there."""
    monkeypatch.chdir(store["files"])
    return store["files"]


def _check(store: dict[str, Any], sql: str, parameters: dict[str, str] | None = None) -> tuple[bytes, str]:
    engine: SqlEngine = store["engine"]
    return engine.run_now(sql, "TabSeparated", parameters)


def _raw_readonly_handle(store: dict[str, Any]) -> Any:
    """A chDB handle with readonly=1 and no guard: what the endpoint had before."""
    handle = chdb.connect(engine_path(store["dsn"]))
    handle.query("USE llmops", "TSV")
    handle.query(
        "SET http_max_tries = 1", "TSV"
    )  # a refused url() connection fails at once instead of retrying for 30 s
    handle.query("SET readonly = 1", "TSV")
    return handle


# ----------------------------------------------------------------------------- the issue's escapes


def _escapes(files: Path, port: int) -> dict[str, str]:
    return {
        "outfile, two spaces": f"SELECT 'x' INTO  OUTFILE '{files}/o1.txt' TRUNCATE FORMAT RawBLOB",
        "outfile, tab": f"SELECT 'x' INTO\tOUTFILE '{files}/o2.txt' TRUNCATE FORMAT RawBLOB",
        "outfile, newline": f"SELECT 'x' INTO\nOUTFILE '{files}/o3.txt' TRUNCATE FORMAT RawBLOB",
        "outfile, comment": "SELECT 'x' INTO/* c */OUTFILE 'o4.txt'",
        "outfile, relative": "select 'x' into outfile 'o5.txt'",
        "describe file": "DESCRIBE file('/etc/passwd', 'TSVWithNames')",
        "describe url": f"DESCRIBE url('http://127.0.0.1:{port}/x', 'TSV')",
        "describe s3": f"DESCRIBE s3('http://127.0.0.1:{port}/bucket/key.tsv', 'TSV')",
        "select from url": f"SELECT * FROM url('http://127.0.0.1:{port}/x', 'TSV', 'a String')",
        "remote": f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
        "file function": "SELECT file('/etc/passwd')",
        "comment trick": "SELECT '/*'; SELECT 2; SELECT '*/'",
        "two statements": "SELECT 1; SELECT 2",
        "system.parts": "SELECT * FROM system.parts",
        "information_schema": "SELECT * FROM information_schema.tables",
        "INFORMATION_SCHEMA": "SELECT * FROM INFORMATION_SCHEMA.TABLES",
        "default": "SELECT * FROM default.secret",
        "other database": "SELECT * FROM other.data",
        "quoted other database": 'SELECT * FROM "other"."data"',
        "in a subquery": "SELECT * FROM llmops.t WHERE s IN (SELECT s FROM default.secret)",
        "in a table": "SELECT 1 WHERE (1, 'x') IN default.secret",
        "scalar subquery": "SELECT (SELECT any(s) FROM default.secret)",
        "join": "SELECT * FROM llmops.t AS l JOIN other.data AS r ON l.a = r.a",
        "identifier parameter": "SELECT * FROM {t:Identifier}",
        "dictGet": "SELECT dictGet('other.d', 's', toUInt64(1))",
        "joinGet": "SELECT joinGet('other.j', 's', toUInt64(1))",
        "settings lifting a limit": "SELECT 1 SETTINGS max_execution_time = 0",
        "settings readonly": "SELECT 1 SETTINGS readonly = 0",
        "SET": "SET readonly = 0",
        "insert": "INSERT INTO llmops.t VALUES (1, 'x')",
        "drop": "DROP TABLE llmops.t",
        "alter": "ALTER TABLE llmops.t DELETE WHERE 1",
        "create": "CREATE TABLE llmops.x (a UInt8) ENGINE = Memory",
        "system command": "SYSTEM DROP DNS CACHE",
        "show create": "SHOW CREATE TABLE default.secret",
        "show tables elsewhere": "SHOW TABLES FROM other",
        "show processlist": "SHOW PROCESSLIST",
        "exists elsewhere": "EXISTS TABLE default.secret",
        "explain of a file read": "EXPLAIN PIPELINE SELECT * FROM file('/etc/passwd')",
        "file-backed format": "SELECT 1 FORMAT Template",
        "describe elsewhere": "DESCRIBE TABLE default.secret",
    }


ESCAPE_NAMES = list(_escapes(Path("/x"), 1))


@pytest.mark.parametrize("name", ESCAPE_NAMES)
def test_guard_refuses_every_escape_of_the_issue(
    store: dict[str, Any], listener: Listener, in_files_dir: Path, name: str
) -> None:
    sql = _escapes(in_files_dir, listener.port)[name]
    before = listener.accepted
    with pytest.raises(QueryRefused):
        _check(store, sql, {"t": "default.secret"})
    assert list(in_files_dir.iterdir()) == []
    assert listener.accepted == before


def test_the_escapes_work_on_a_readonly_handle_without_the_guard(
    store: dict[str, Any], listener: Listener, tmp_path: Path
) -> None:
    """Why the guard exists: readonly=1 alone lets each of these through."""
    handle = _raw_readonly_handle(store)
    try:
        handle.query(f"SELECT 'x' INTO  OUTFILE '{tmp_path}/o.txt' TRUNCATE FORMAT RawBLOB", "TSV")
        assert (tmp_path / "o.txt").read_text() == "x"
        assert handle.query("DESCRIBE file('/etc/passwd', 'TSVWithNames')", "TSV").bytes()
        before = listener.accepted
        with pytest.raises(
            Exception, match=r"^Code: \d+\. DB::Exception"
        ):  # chDB raises chdb._exceptions.ChdbError, not chdb.ChdbError
            handle.query(f"DESCRIBE url('http://127.0.0.1:{listener.port}/x', 'TSV')", "TSV")
        wait_until(lambda: listener.accepted > before, 10, "the url() connection")
        assert SECRET.encode() in handle.query("SELECT s FROM default.secret", "TSV").bytes()
        # A failed multi-statement query leaves its first result in the handle for the next query.
        with pytest.raises(Exception, match=r"^Code: \d+\. DB::Exception"):
            handle.query("SELECT 'LEAK'; SELECT throwIf(1)", "TSV")
        assert handle.query("SELECT 1", "TSV").bytes() == b"LEAK\n1\n"
    finally:
        handle.close()


def test_user_files_path_does_not_bound_file_in_chdb(store: dict[str, Any]) -> None:
    """Recorded fact, not a defence: chDB runs ClickHouse in local mode, where file() reads any path
    whatever user_files_path says, so the guard is what keeps file() out."""
    handle = _raw_readonly_handle(store)
    try:
        assert (
            handle.query("SELECT value FROM system.server_settings WHERE name = 'user_files_path'", "TSV").bytes()
            != b"/etc/\n"
        )
        assert handle.query("DESCRIBE file('/etc/hostname', 'TSV')", "TSV").bytes()
    finally:
        handle.close()


def test_a_failed_query_leaves_nothing_for_the_next(store: dict[str, Any]) -> None:
    """chDB hands a failed query's partial output to the next query on the same connection (about 4 times
    in 5 for the UNION below), so this repeats: one leak in 20 rounds fails the test."""
    for _ in range(20):
        for failing in (
            "SELECT 'LEAK'; SELECT throwIf(1)",
            "SELECT 'LEAK' UNION ALL SELECT toString(throwIf(1))",
            "SELECT throwIf(1)",
        ):
            with pytest.raises(
                Exception, match=r"^Code: \d+\. DB::Exception"
            ):  # the engine's error or the guard's refusal, both in ClickHouse's form
                _check(store, failing)
            assert _check(store, "SELECT 1") == (b"1\n", "TabSeparated")


def test_a_failed_query_leaves_nothing_for_the_next_request_in_its_slot(store: dict[str, Any]) -> None:
    """The same through the endpoint's pooled path (one slot, so every request shares the handle)."""
    engine: SqlEngine = store["engine"]

    async def rounds() -> list[bytes]:
        answers = []
        for _ in range(20):
            with pytest.raises(
                Exception, match=r"^Code: \d+\. DB::Exception"
            ):  # the engine's error or the guard's refusal, both in ClickHouse's form
                await engine.execute("SELECT 'LEAK' UNION ALL SELECT toString(throwIf(1))", "TabSeparated", {})
            answers.append((await engine.execute("SELECT 1", "TabSeparated", {}))[0])
        return answers

    assert asyncio.run(rounds()) == [b"1\n"] * 20


# ----------------------------------------------------------------------------- what stays allowed


ALLOWED = {
    # Grafana's ClickHouse plugin: schema browser, query builder, health check.
    "SHOW DATABASES": b"llmops",
    "SHOW TABLES": b"big\nt\n",
    'SHOW TABLES FROM "llmops"': b"big\nt\n",
    'DESC TABLE "llmops"."t"': b"a\tUInt64",
    (
        "SELECT name, type, table FROM system.columns WHERE database IN ('llmops') AND table = 't' ORDER BY name"
    ): b"a\tUInt64\tt\ns\tString\tt\n",
    "SELECT name, is_aggregate FROM system.functions WHERE name = 'quantile'": b"quantile\t1\n",
    "SELECT version()": b"26.",
    # clickhouse-connect's handshake and plain analytics.
    "SELECT name, value FROM system.settings WHERE name = 'readonly'": b"readonly\t1\n",
    "SELECT timezone(), currentDatabase()": b"\tllmops\n",
    "WITH x AS (SELECT a FROM t WHERE a < 3) SELECT sum(a) FROM x": b"3\n",
    # ORDER BY binds to the last SELECT of a UNION, so the parts come in any order: sort outside it.
    (
        "SELECT a FROM (SELECT a FROM llmops.t WHERE a < 2 UNION ALL SELECT a FROM t WHERE a = 99) ORDER BY a"
    ): b"0\n1\n99\n",
    "SELECT count() FROM (SELECT * FROM (SELECT a FROM t WHERE a IN (SELECT a FROM llmops.t WHERE a > 97)))": b"2\n",
    "SELECT a FROM t WHERE a = 5 FORMAT JSONEachRow": b'{"a":5}\n',
    "select   /* hi */ a from t where a = 7 -- bye": b"7\n",
    "EXISTS TABLE llmops.t": b"1\n",
    "DESCRIBE (SELECT a FROM t)": b"a\tUInt64",
    "EXPLAIN SYNTAX SELECT a FROM t": b"SELECT a",
    "SELECT s FROM t WHERE s LIKE '%;%' OR s = 'SELECT 1; DROP TABLE t'": b"",
}


@pytest.mark.parametrize("sql", list(ALLOWED))
def test_allowed_queries_run(store: dict[str, Any], sql: str) -> None:
    body, _ = _check(store, sql)
    assert ALLOWED[sql] in body


def test_query_parameters_and_format_clause(store: dict[str, Any]) -> None:
    assert _check(store, "SELECT {n:UInt8} + 1", {"n": "41"}) == (b"42\n", "TabSeparated")
    assert _check(store, "SELECT 1 AS one FORMAT JSONEachRow") == (b'{"one":1}\n', "JSONEachRow")


def test_every_dashboard_and_alert_query_passes_the_guard(store: dict[str, Any]) -> None:
    from tests.grafana_macros import TimeRange
    from tests.test_dashboard_queries import PANEL_QUERIES, RANGE_W1, RULES, W1_END, _load_dashboards, _variables

    queries = [render_panel_query(sql, _variables(), RANGE_W1) for _, _, sql in PANEL_QUERIES]
    for dash in _load_dashboards():
        queries += [
            render_panel_query(var["query"]["rawSql"], _variables(), RANGE_W1) for var in dash["templating"]["list"]
        ]
        queries += [
            render_panel_query(a["target"]["rawSql"], _variables(), RANGE_W1)
            for a in dash["annotations"]["list"]
            if "target" in a
        ]
    for rule in RULES:
        node = next(n for n in rule["data"] if n["refId"] == "A")
        window = node["relativeTimeRange"]
        queries.append(
            render_alert_query(node["model"]["rawSql"], TimeRange.relative(W1_END, window["from"], window["to"]))
        )
    engine: SqlEngine = store["engine"]
    assert engine.guard is not None and len(queries) > 20
    handle = chdb.connect(engine_path(store["dsn"]))
    try:
        for sql in queries:
            checked = engine.guard.check(
                sql, lambda text, params: handle.query(text, "TSVRaw", params=dict(params)).bytes()
            )
            assert checked.kind == "select"
    finally:
        handle.close()


# ----------------------------------------------------------------------------- variants (hypothesis)


_WS = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", " /* x */ ", "/**/", " -- c\n", "\n\t "])
_FUNCTIONS = [
    "file('{files}/f.tsv', 'TSV', 'a String')",
    "url('http://127.0.0.1:{port}/x', 'TSV', 'a String')",
    "s3('http://127.0.0.1:{port}/b/k.tsv', 'TSV', 'a String')",
    "remote('127.0.0.1:{port}', system.one)",
    "remoteSecure('127.0.0.1:{port}', system.one)",
    "mysql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
    "postgresql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
    "urlCluster('default', 'http://127.0.0.1:{port}/x')",
    "merge('default', '.*')",
    "view(SELECT * FROM default.secret)",
]
_FORBIDDEN_TABLES = [
    ("default", "secret"),
    ("other", "data"),
    ("system", "parts"),
    ("information_schema", "tables"),
    ("INFORMATION_SCHEMA", "TABLES"),
    ("system", "zookeeper"),
    ("system", "processes"),
]


@st.composite
def _keyword(draw: st.DrawFn, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c.lower() for c in word)


@st.composite
def _table_name(draw: st.DrawFn, database: str, table: str) -> str:
    quote = draw(st.sampled_from(["", "`", '"']))
    return f"{quote}{database}{quote}.{quote}{table}{quote}"


@st.composite
def _escape_query(draw: st.DrawFn, files: Path, port: int) -> str:
    """One escape (a table function, another database's table, INTO OUTFILE, SETTINGS) in a random context."""
    w = lambda: draw(_WS)  # noqa: E731
    k = lambda word: draw(_keyword(word))  # noqa: E731
    kind = draw(st.sampled_from(["function", "table", "outfile", "settings", "multi"]))
    if kind == "function":
        source = draw(st.sampled_from(_FUNCTIONS)).format(files=files, port=port)
    else:
        source = draw(_table_name(*draw(st.sampled_from(_FORBIDDEN_TABLES))))
    if kind in ("outfile", "settings", "multi"):
        source = "llmops.t"
    contexts = [
        f"{k('SELECT')}{w()}*{w()}{k('FROM')}{w()}{source}",
        f"{k('DESCRIBE')}{w()}{source}",
        f"{k('DESC')}{w()}{k('TABLE')}{w()}{source}",
        f"{k('SELECT')} a {k('FROM')} llmops.t {k('WHERE')} a {k('IN')}{w()}({k('SELECT')} 1 {k('FROM')}{w()}{source})",
        f"{k('WITH')} w {k('AS')} ({k('SELECT')} * {k('FROM')}{w()}{source}){w()}{k('SELECT')} * {k('FROM')} w",
        f"{k('SELECT')} 1{w()}{k('UNION')}{w()}{k('ALL')}{w()}{k('SELECT')} count() {k('FROM')}{w()}{source}",
        f"{k('SELECT')} ({k('SELECT')} count() {k('FROM')}{w()}{source})",
        f"{k('SELECT')} * {k('FROM')} llmops.t {k('AS')} l {k('JOIN')}{w()}{source}{w()}{k('AS')} r {k('ON')} 1",
        f"{k('SELECT')} * {k('FROM')} ({k('SELECT')} * {k('FROM')} ({k('SELECT')} * {k('FROM')}{w()}{source}))",
        f"{k('EXPLAIN')}{w()}{k('PIPELINE')}{w()}{k('SELECT')} * {k('FROM')}{w()}{source}",
    ]
    sql = draw(st.sampled_from(contexts))
    if kind == "outfile":
        target = draw(st.sampled_from([f"{files}/out.txt", "out.txt", "./sub/out.txt"]))
        sql = f"{sql}{w()}{k('INTO')}{w()}{k('OUTFILE')}{w()}'{target}'" + draw(
            st.sampled_from(["", f" {k('TRUNCATE')}", f" {k('APPEND')}"])
        )
    if kind == "settings":
        name = draw(
            st.sampled_from(
                ["max_execution_time", "readonly", "max_result_rows", "max_memory_usage", "allow_python_table_function"]
            )
        )
        sql = f"{sql}{w()}{k('SETTINGS')}{w()}{name}{w()}={w()}0"
    if kind == "multi":
        sql = draw(
            st.sampled_from(
                [
                    f"{k('SELECT')} '/*';{w()}{sql};{w()}{k('SELECT')} '*/'",
                    f"{sql};{w()}{k('SELECT')} * {k('FROM')} default.secret",
                ]
            )
        )
    if draw(st.booleans()):
        sql += f"{w()}{k('FORMAT')}{w()}" + draw(st.sampled_from(["TSV", "JSONEachRow", "CSV", "Pretty"]))
    return sql + draw(st.sampled_from(["", ";", " ;", "\n"]))


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data())
def test_no_variant_writes_connects_or_reads_another_database(
    store: dict[str, Any], listener: Listener, in_files_dir: Path, data: st.DataObject
) -> None:
    sql = data.draw(_escape_query(in_files_dir, listener.port), label="sql")
    before = listener.accepted
    cwd_before = sorted(os.listdir(os.getcwd()))
    body = b""
    try:
        body, _ = _check(store, sql)
    except QueryRefused:
        pass
    else:
        pytest.fail(f"allowed: {sql!r} -> {body[:200]!r}")
    finally:
        assert list(in_files_dir.iterdir()) == [], sql
        assert sorted(os.listdir(os.getcwd())) == cwd_before, sql
        assert listener.accepted == before, sql
        assert SECRET.encode() not in body, sql


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ws=st.lists(_WS, min_size=6, max_size=6),
    case=st.lists(st.booleans(), min_size=6, max_size=6),
    quote=st.sampled_from(["", "`", '"']),
)
def test_benign_variants_stay_allowed(store: dict[str, Any], ws: list[str], case: list[bool], quote: str) -> None:
    """The same mutations on a query of the pipeline's own tables: still allowed, same answer."""
    words = [
        w.upper() if up else w.lower()
        for w, up in zip(["SELECT", "FROM", "WHERE", "IN", "SELECT", "FROM"], case, strict=True)
    ]
    table = f"{quote}llmops{quote}.{quote}t{quote}"
    sql = (
        f"{words[0]}{ws[0]}count(){ws[1]}{words[1]}{ws[2]}{table}{ws[3]}{words[2]} a {words[3]}{ws[4]}"
        f"({words[4]} a {words[5]}{ws[5]}{table} WHERE a < 10)"
    )
    assert _check(store, sql) == (b"10\n", "TabSeparated")


# ----------------------------------------------------------------------------- through HTTP


class Served:
    """A SqlEndpoint on its own event loop thread, as the worker runs it."""

    def __init__(self, dsn: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.endpoint = SqlEndpoint(dsn, "llmops", "127.0.0.1", 0, **options)
        asyncio.run_coroutine_threadsafe(self.endpoint.start(), self.loop).result(30)
        self.url = f"{'https' if options.get('tls_cert_file') else 'http'}://127.0.0.1:{self.endpoint.port}/"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.endpoint.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(store: dict[str, Any]) -> Iterator[Served]:
    server = Served(store["dsn"], limits=LIMITS, max_concurrent_queries=2, max_queued_queries=0, queue_timeout_s=1.0)
    yield server
    server.close()


def test_http_refuses_the_escapes_with_clickhouse_errors(
    served: Served, listener: Listener, in_files_dir: Path
) -> None:
    escapes = _escapes(in_files_dir, listener.port)
    before = listener.accepted
    for name in (
        "outfile, two spaces",
        "outfile, relative",
        "describe file",
        "describe url",
        "comment trick",
        "default",
        "information_schema",
    ):
        answer = requests.post(served.url, data=escapes[name], timeout=30)
        assert answer.status_code in (400, 403), name
        assert answer.text.startswith("Code: ") and answer.headers["X-ClickHouse-Exception-Code"].isdigit(), name
    assert list(in_files_dir.iterdir()) == [] and listener.accepted == before
    answer = requests.post(served.url, data=escapes["describe file"], timeout=30)
    assert answer.status_code == 403 and "(READONLY)" in answer.text and "file()" in answer.text
    # Settings from the URL cannot lift the limits, and no other database can be made current.
    for params in ({"max_execution_time": "0"}, {"readonly": "0", "max_result_rows": "0"}, {"database": "default"}):
        answer = requests.get(served.url, params={"query": "SELECT 1", **params}, timeout=30)
        assert answer.status_code == 403, params
    # After all of that, one query gets exactly its own answer.
    assert requests.get(served.url, params={"query": "SELECT 1"}, timeout=30).text == "1\n"


def test_http_speaks_clickhouse_to_clickhouse_connect(served: Served) -> None:
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=served.endpoint.port, database="llmops", compress=False, autogenerate_session_id=False
    )
    try:
        assert client.query("SELECT count() FROM t").result_rows == [(100,)]
        assert client.query("SELECT a FROM t WHERE a = {a:UInt64}", parameters={"a": 3}).result_rows == [(3,)]
        assert ("t",) in client.query("SHOW TABLES").result_rows
        assert client.raw_query("SELECT 1 AS one", fmt="JSONEachRow") == b'{"one":1}\n'
    finally:
        client.close()


def test_http_huge_results_are_refused(served: Served) -> None:
    answer = requests.get(served.url, params={"query": "SELECT n FROM llmops.big"}, timeout=30)
    assert answer.status_code == 500 and "(TOO_MANY_ROWS_OR_BYTES)" in answer.text
    # A result with no table under it escapes the row limit in ClickHouse; the memory limit still holds.
    answer = requests.get(served.url, params={"query": "SELECT arrayJoin(range(100000000))"}, timeout=60)
    assert answer.status_code == 500 and "(MEMORY_LIMIT_EXCEEDED)" in answer.text
    assert requests.get(served.url, params={"query": "SELECT 1"}, timeout=30).text == "1\n"


def _running(store: dict[str, Any], marker: str) -> int:
    handle = chdb.connect(engine_path(store["dsn"]))
    try:
        return int(
            handle.query(
                f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
                "AND query NOT LIKE '%system.processes%'",
                "TSV",
            ).bytes()
        )
    finally:
        handle.close()


def test_a_slow_query_ends_at_its_limit_and_others_are_answered_or_refused_meanwhile(store: dict[str, Any]) -> None:
    limits = QueryLimits(
        # 20 s: both slow queries must still run while the quick and the refused ones are asked,
        # which on a loaded machine took longer than 6 s.
        max_execution_time_s=20.0,
        max_result_rows=5_000,
        max_result_bytes=4 * 1024 * 1024,
        max_memory_usage=256 * 1024 * 1024,
    )
    server = Served(store["dsn"], limits=limits, max_concurrent_queries=2, max_queued_queries=0, queue_timeout_s=1.0)
    answers: dict[str, requests.Response] = {}

    def slow(name: str) -> None:
        answers[name] = requests.post(server.url, data=f"{SLOW_SQL} WHERE a.name != '{name}'", timeout=60)

    threads = [threading.Thread(target=slow, args=(name,)) for name in ("slow-one", "slow-two")]
    try:
        threads[0].start()
        wait_until(lambda: _running(store, "slow-one") == 1, 30, "the first slow query running")
        # One slot is busy with the slow query: another query is answered while it still runs.
        quick = requests.get(server.url, params={"query": "SELECT 2"}, timeout=30)
        assert quick.status_code == 200 and quick.text == "2\n"
        assert "slow-one" not in answers
        # Both slots busy and no queue: the next query is refused at once with a 503.
        threads[1].start()
        wait_until(lambda: _running(store, "slow-two") == 1, 30, "the second slow query running")
        refused = requests.get(server.url, params={"query": "SELECT 3"}, timeout=30)
        assert refused.status_code == 503 and "(TOO_MANY_SIMULTANEOUS_QUERIES)" in refused.text
        assert "slow-one" not in answers and "slow-two" not in answers
        for thread in threads:
            thread.join(60)
        for name in ("slow-one", "slow-two"):
            assert answers[name].status_code == 500 and "(TIMEOUT_EXCEEDED)" in answers[name].text
        assert requests.get(server.url, params={"query": "SELECT 4"}, timeout=30).text == "4\n"
    finally:
        for thread in threads:
            if thread.is_alive():
                thread.join(60)
        server.close()


def test_http_credentials_when_configured(store: dict[str, Any]) -> None:
    server = Served(store["dsn"], limits=LIMITS, user="grafana", password=SecretStr("s3cret"))
    try:
        query = {"query": "SELECT 1"}
        for headers, params in (
            ({}, {}),
            ({"X-ClickHouse-User": "grafana", "X-ClickHouse-Key": "wrong"}, {}),
            ({}, {"user": "default", "password": "s3cret"}),
            ({"Authorization": "Basic " + base64.b64encode(b"grafana:nope").decode()}, {}),
        ):
            answer = requests.get(server.url, params={**query, **params}, headers=headers, timeout=30)
            assert answer.status_code == 401 and "(AUTHENTICATION_FAILED)" in answer.text, (headers, params)
        assert requests.get(server.url, params=query, auth=("grafana", "s3cret"), timeout=30).text == "1\n"
        ok = requests.get(
            server.url, params=query, headers={"X-ClickHouse-User": "grafana", "X-ClickHouse-Key": "s3cret"}, timeout=30
        )
        assert ok.text == "1\n"
        assert (
            requests.get(server.url, params={**query, "user": "grafana", "password": "s3cret"}, timeout=30).text
            == "1\n"
        )
        client = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=server.endpoint.port,
            username="grafana",
            password="s3cret",
            database="llmops",
            compress=False,
            autogenerate_session_id=False,
        )
        assert client.query("SELECT count() FROM t").result_rows == [(100,)]
        client.close()
        assert requests.get(server.url + "ping", timeout=30).text == "Ok.\n"
    finally:
        server.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_http_over_tls(store: dict[str, Any], tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = Served(store["dsn"], limits=LIMITS, tls_cert_file=cert, tls_key_file=key)
    try:
        assert server.url.startswith("https://")
        assert requests.get(server.url, params={"query": "SELECT 1"}, verify=str(cert), timeout=30).text == "1\n"
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(server.url.replace("https://", "http://"), params={"query": "SELECT 1"}, timeout=30)
        client = clickhouse_connect.get_client(
            host="127.0.0.1",
            port=server.endpoint.port,
            interface="https",
            ca_cert=str(cert),
            database="llmops",
            compress=False,
            autogenerate_session_id=False,
        )
        assert client.query("SELECT count() FROM t").result_rows == [(100,)]
        # (not client.close(): clickhouse-connect 1.12's HTTPS pool close fails on urllib3-future's pool type)
    finally:
        server.close()


# ----------------------------------------------------------------------------- llmops sql


def test_llmops_sql_uses_the_same_guard_without_a_worker(tmp_path: Path) -> None:
    """No endpoint serves the store: the command opens it and applies the same checks (own process, own store)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    store = tmp_path / "data"
    setup = "from sinks.clickhouse.client import connect; connect('chdb://%s', 'llmops', create_database=True)" % (
        store / "clickhouse"
    )
    subprocess.run([sys.executable, "-c", setup], check=True, env=env, cwd=tmp_path, capture_output=True)
    flags = ["--data-dir", str(store), "--sql-port", str(free_port())]

    def run(sql: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "llmops", "sql", sql, *flags, "--format", "TSV"]
        return subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    ok = run("SELECT 40 + 2")
    assert ok.returncode == 0 and ok.stdout == "42\n", ok.stderr
    refused = run("SELECT 'x' INTO  OUTFILE 'written.txt'")
    assert (
        refused.returncode == 2 and "INTO OUTFILE" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "written.txt").exists() and not (store / "written.txt").exists()


def test_readers_reach_an_endpoint_with_credentials_and_tls(
    store: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`llmops report`/`sql` (open_reader, the `llmops sql` command) use the configured credentials and trust the
    configured certificate."""
    from llmops.cli import main
    from llmops.config import Settings
    from llmops.store import open_reader

    cert, key = _self_signed(tmp_path)
    server = Served(
        store["dsn"], limits=LIMITS, user="reader", password=SecretStr("pw"), tls_cert_file=cert, tls_key_file=key
    )
    try:
        sql = {
            "port": server.endpoint.port,
            "user": "reader",
            "password": "pw",
            "tls_cert_file": cert,
            "tls_key_file": key,
        }
        settings = Settings(data_dir=store["root"], sql=sql)
        assert open_reader(settings).query("SELECT count() FROM t").result_rows == [(100,)]
        monkeypatch.setenv("LLMOPS_DATA_DIR", str(store["root"]))
        for name, value in sql.items():
            monkeypatch.setenv(f"LLMOPS_SQL__{name.upper()}", str(value))
        assert main(["sql", "--format", "TSV", "SELECT 40 + 2"]) == 0 and capsys.readouterr().out == "42\n"
        assert main(["sql", "--format", "TSV", "SELECT * FROM default.secret"]) == 1
        assert "ACCESS_DENIED" in capsys.readouterr().err
        monkeypatch.setenv("LLMOPS_SQL__PASSWORD", "nope")
        assert main(["sql", "--format", "TSV", "SELECT 1"]) == 1 and "AUTHENTICATION_FAILED" in capsys.readouterr().err
    finally:
        server.close()


# ------------------------------------------------------------------- Grafana's plugin (clickhouse-go over HTTP)

# What clickhouse-go v2 (conn_http.go, conn_http_query.go, context.go) sends for a query, as Grafana's ClickHouse
# plugin (pkg/plugin/driver.go: protocol http, compression GZIP, query timeout 60 s) configures it: a POST whose body
# is the SQL, URL parameters sorted as Go's url.Values.Encode writes them (the database, default_format=Native, its
# protocol revision, max_execution_time = context deadline + 5 s, a query_id when set), Accept-Encoding from its
# compression method, its User-Agent with the plugin's products, basic auth from the URL's user info.
CLICKHOUSE_GO_REVISION = 54460  # lib/proto/const.go DBMS_TCP_PROTOCOL_VERSION
CLICKHOUSE_GO_HELLO = "SELECT displayName(), version(), revision(), timezone()"


def _clickhouse_go_request(url: str, sql: str, **settings: str) -> requests.Response:
    from urllib.parse import urlencode

    params = {
        "client_protocol_version": str(CLICKHOUSE_GO_REVISION),
        "database": "llmops",
        "default_format": "Native",
        **settings,
    }
    headers = {
        "Accept-Encoding": "gzip",
        "User-Agent": "clickhouse-go/2.40.1 (lv:go/1.24.4; os:linux) grafana/12.1.0 clickhouse-datasource/4.10.0",
    }
    return requests.post(f"{url}?{urlencode(sorted(params.items()))}", data=sql.encode(), headers=headers, timeout=60)


class _GoNative:
    """Reads a Native answer as ch-go's proto.Block.Decode does at clickhouse-go's revision: BlockInfo fields, then
    per column name, type, the custom-serialization flag, the data (the value types a panel query returns)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated"
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def _uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def _str(self) -> str:
        return self._take(self._uvarint()).decode()

    def _int(self, size: int, signed: bool = False) -> int:
        return int.from_bytes(self._take(size), "little", signed=signed)

    def _column(self, type_name: str, rows: int) -> list[Any]:
        import struct

        if type_name.startswith("LowCardinality("):
            assert self._int(8) == 1  # key version
            flags = self._int(8)
            keys = [self._column(type_name[len("LowCardinality(") : -1], self._int(8))] if flags & (1 << 9) else [[]]
            width = (1, 2, 4, 8)[flags & 0xFF]
            return [keys[0][self._int(width)] for _ in range(self._int(8))]
        if type_name == "String":
            return [self._str() for _ in range(rows)]
        if type_name == "Float64":
            return [struct.unpack("<d", self._take(8))[0] for _ in range(rows)]
        if type_name.startswith("DateTime64("):
            scale = int(type_name[len("DateTime64(") :].split(",")[0].rstrip(")"))
            return [self._int(8, signed=True) / 10**scale for _ in range(rows)]
        sizes = {"UInt8": 1, "UInt16": 2, "UInt32": 4, "UInt64": 8, "DateTime": 4}
        name = type_name.split("(")[0]
        assert name in sizes, type_name
        return [self._int(sizes[name]) for _ in range(rows)]

    def rows(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        names: list[str] = []
        out: list[tuple[Any, ...]] = []
        while self.pos < len(self.data):
            while (field := self._uvarint()) != 0:  # BlockInfo
                self._take(1 if field == 1 else 4)
            columns, rows = self._uvarint(), self._uvarint()
            values = []
            names = []
            for _ in range(columns):
                names.append(self._str())
                type_name = self._str()
                assert self._take(1) == b"\x00", "custom serialization flag"
                values.append(self._column(type_name, rows))
            out += list(zip(*values, strict=True))
        return names, out


@pytest.fixture(scope="module")
def panel(store: dict[str, Any]) -> str:
    """The pipeline's tables with a few calls, and a dashboard panel query over them as Grafana renders it."""
    from datetime import datetime, timedelta

    from sinks.clickhouse.migrations import apply_migrations
    from tests.grafana_macros import ALL, TimeRange, Variable
    from tests.test_dashboard_queries import PANEL_QUERIES

    writer = connect(store["dsn"], "llmops")
    try:
        apply_migrations(writer, "llmops")
        writer.command(
            "INSERT INTO llm_calls (ts, trace_id, span_id, service, model, request_model) SELECT "
            "toDateTime64('2026-11-02 10:00:00', 9, 'UTC') + toIntervalSecond(number * 7), "
            "lower(hex(number)), lower(hex(number)), "
            "['bot', 'search'][number % 2 + 1], 'gpt-4o-mini', 'gpt-4o-mini' FROM numbers(40)"
        )
    finally:
        writer.close()
    sql = next(sql for _, title, sql in PANEL_QUERIES if title == "LLM calls stored per second")
    variables = {name: Variable(name, (ALL,)) for name in ("service", "environment", "team", "model")}
    start = datetime(2026, 11, 2, 9, 55, tzinfo=UTC)
    return render_panel_query(sql, variables, TimeRange(start, start + timedelta(minutes=15), timedelta(minutes=1)))


def test_clickhouse_go_hello_and_a_dashboard_panel_answer_as_grafana_reads_them(served: Served, panel: str) -> None:
    hello = _clickhouse_go_request(served.url, CLICKHOUSE_GO_HELLO, max_execution_time="65")
    assert hello.status_code == 200, hello.text
    names, rows = _GoNative(hello.content).rows()
    timezone = requests.get(served.url, params={"query": "SELECT timezone()"}, timeout=30).text.strip()
    assert len(names) == 4 and len(rows) == 1 and rows[0][2] >= 54454 and rows[0][3] == timezone
    answer = _clickhouse_go_request(served.url, panel, max_execution_time="65", query_id="c5b4a1f0-grafana")
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-ClickHouse-Query-Id"] == "c5b4a1f0-grafana"
    assert "Content-Encoding" not in answer.headers  # gzip only with enable_http_compression=1, as ClickHouse
    names, rows = _GoNative(answer.content).rows()
    expected = requests.post(
        served.url, params={"default_format": "JSONCompact"}, data=panel.encode(), timeout=30
    ).json()
    assert names == [c["name"] for c in expected["meta"]] == ["time", "service", "calls_per_s"]
    assert [(service, rate) for _, service, rate in rows] == [(service, rate) for _, service, rate in expected["data"]]
    assert len(rows) > 2 and sum(rate for _, _, rate in rows) * 60 == pytest.approx(40)


def test_http_compression_when_asked_and_refused_encodings(served: Served) -> None:
    import gzip as gzip_module
    import zlib

    for encoding, inflate in (("gzip", gzip_module.decompress), ("deflate", zlib.decompress)):
        raw = requests.get(
            served.url,
            params={"query": "SELECT a FROM t ORDER BY a", "enable_http_compression": "1"},
            headers={"Accept-Encoding": encoding},
            timeout=30,
            stream=True,
        ).raw
        assert raw.headers["Content-Encoding"] == encoding
        assert inflate(raw.read(decode_content=False)).split() == [str(n).encode() for n in range(100)]
    answer = requests.post(
        served.url, data=gzip_module.compress(b"SELECT 1"), headers={"Content-Encoding": "gzip"}, timeout=30
    )
    assert answer.status_code == 400 and "Content-Encoding gzip" in answer.text
    answer = requests.get(served.url, params={"query": "SELECT 1", "compress": "1"}, timeout=30)
    assert answer.status_code == 400 and "enable_http_compression" in answer.text


def test_url_settings_lower_the_limits_and_never_raise_them(served: Served) -> None:
    rows = {"query": "SELECT n FROM llmops.big"}  # 20,000 rows; the endpoint's cap is 5,000
    for raise_it in (
        {"max_result_rows": "1000000"},
        {"max_result_rows": "1000000", "max_result_bytes": "1000000000000"},
    ):
        answer = requests.get(served.url, params={**rows, **raise_it}, timeout=30)
        assert answer.status_code == 500 and "(TOO_MANY_ROWS_OR_BYTES)" in answer.text, raise_it
    answer = requests.get(served.url, params={"query": SLOW_SQL, "max_execution_time": "3600"}, timeout=60)
    assert (
        answer.status_code == 500 and "(TIMEOUT_EXCEEDED)" in answer.text and "maximum: 2" in answer.text
    )  # the 2 s cap
    # Lower than the cap: applied by the engine.
    assert requests.get(served.url, params={"query": "SELECT a FROM t"}, timeout=30).status_code == 200
    answer = requests.get(served.url, params={"query": "SELECT a FROM t", "max_result_rows": "10"}, timeout=30)
    assert answer.status_code == 500 and "(TOO_MANY_ROWS_OR_BYTES)" in answer.text
    answer = requests.get(served.url, params={"query": SLOW_SQL, "max_execution_time": "0.2"}, timeout=60)
    assert answer.status_code == 500 and "(TIMEOUT_EXCEEDED)" in answer.text and "maximum: 200.000 ms" in answer.text
    for bad, status in (
        ({"max_execution_time": "0"}, 403),
        ({"max_memory_usage": "-1"}, 403),
        ({"max_result_rows": "many"}, 400),
    ):
        assert requests.get(served.url, params={"query": "SELECT 1", **bad}, timeout=30).status_code == status, bad
    assert requests.get(served.url, params={"query": "SELECT 1"}, timeout=30).text == "1\n"


def test_native_layout_for_a_client_revision_covers_the_pipeline_types(store: dict[str, Any]) -> None:
    """Every byte of chDB's answer is walked (several blocks, nested types); only BlockInfo and the flags are added."""
    from llmops.native_format import CUSTOM_SERIALIZATION_REVISION, NativeTypeUnsupported, for_client_revision

    sql = (
        "SELECT number AS n, toString(number) AS s, toLowCardinality(toString(number % 7)) AS lc,"
        " if(number % 3 = 0, NULL, toLowCardinality(toNullable(toString(number % 5)))) AS lcn,"
        " toNullable(number % 3) AS nn,"
        " toDecimal128(number, 9) AS d, toDateTime64(number, 9, 'UTC') AS ts, toFixedString('ab', 2) AS fs,"
        " range(number % 4) AS arr, map('k', toString(number)) AS m, tuple(number, 'x') AS tup,"
        " CAST((1, 'y') AS Tuple(a UInt8, b String)) AS named,"
        " [toLowCardinality(toString(number % 2))] AS alc, toUUID('00000000-0000-0000-0000-000000000001') AS u,"
        " toDate(number) AS day,"
        " CAST(number % 2 AS Enum8('a' = 0, 'b' = 1)) AS e, toIPv4(number) AS ip, number % 2 = 1 AS flag"
        " FROM numbers(150000)"
    )
    handle = chdb.connect(engine_path(store["dsn"]))
    try:
        plain = handle.query(sql, "Native").bytes()
        unsupported = handle.query("SELECT '{\"a\": 1}'::JSON AS j", "Native").bytes()
    finally:
        handle.close()
    columns = 18
    rewritten = for_client_revision(plain, CUSTOM_SERIALIZATION_REVISION)
    blocks = rewritten.count(b"\x01\x00\x02\xff\xff\xff\xff\x00\x12")  # BlockInfo, then 18 columns
    assert blocks > 1 and len(rewritten) == len(plain) + blocks * (8 + columns)
    assert len(for_client_revision(plain, 54405)) == len(plain) + blocks * 8  # clickhouse-connect's revision: no flags
    assert for_client_revision(plain, 0) == plain
    with pytest.raises(NativeTypeUnsupported, match="JSON"):
        for_client_revision(unsupported, CUSTOM_SERIALIZATION_REVISION)
