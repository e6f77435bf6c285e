"""The optional cluster DDL (schemas/cluster) and retention (schemas/retention) against ClickHouse itself.

No Keeper or cluster here, so: every statement goes through ClickHouse's own parser (formatQuery in
chDB); each `<table>_local` is created with its Replicated engine swapped for the single-node engine
and compared column by column (and keys, indexes) with the table the real migrations create; each
Distributed table is compared with the contract table; the retention ALTERs run for real.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import Migration, apply_migrations

ROOT = Path(__file__).resolve().parents[1] / "schemas"
CLUSTER = ROOT / "cluster"
RETENTION = ROOT / "retention"
DB = "llmops"
LOCAL_DB = "llmops_cluster_check"
DIST_DB = "llmops_dist_check"

_ON_CLUSTER = re.compile(r"\s+ON CLUSTER '\{cluster\}'")
_REPLICATED = re.compile(r"ENGINE = Replicated(\w*MergeTree)\('(?P<path>[^']*)', '\{replica\}'(?P<rest>(?:, [^)]*)?)\)")
_DISTRIBUTED = re.compile(r"ENGINE = Distributed\('\{cluster\}', currentDatabase\(\), (?P<local>\w+), (?P<key>.+)\)\s*$", re.S)
_CREATED = re.compile(r"^CREATE (TABLE|VIEW|MATERIALIZED VIEW|FUNCTION) IF NOT EXISTS (\w+)")
# The partition-number sharding key used for every fenced table.
PARTITION_KEY = "toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1])"
# Tables whose sink inserts carry fences (_ingest_source = '<topic id>/<partition>').
FENCED = {"otel_traces", "llm_calls", "ingest_errors", "llm_usage_1m", "llm_latency_1m"}


def _statements(directory: Path) -> list[str]:
    """Split exactly as the migration runner does."""
    out: list[str] = []
    for path in sorted(directory.glob("*.sql")):
        out.extend(Migration(0, path.name, path.read_text()).statements())
    return out


def _local_single_node(statement: str) -> str:
    """The `_local` DDL with the plain engine: what a single server would create."""
    statement = _ON_CLUSTER.sub("", statement, count=1)
    return _REPLICATED.sub(lambda m: f"ENGINE = {m.group(1)}" + (f"({m.group('rest')[2:]})" if m.group("rest") else ""), statement)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One chDB store for the module (a process opens one chDB path at a time)."""
    path = Path(tempfile.mkdtemp(prefix="llmops_cluster_ddl_"))
    ch = connect(f"chdb://{path}", DB, create_database=True)
    try:
        apply_migrations(ch, DB)
        for db in (LOCAL_DB, DIST_DB):
            ch.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        yield ch
    finally:
        ch.close()
        shutil.rmtree(path, ignore_errors=True)


def _run_in(ch: Client, database: str, statement: str) -> None:
    previous = ch.database
    ch.database = database
    try:
        ch.command(f"USE `{database}`")
        ch.command(statement)
    finally:
        ch.database = previous
        ch.command(f"USE `{previous}`")


def _columns(ch: Client, database: str, table: str) -> list[tuple]:
    return ch.query(
        "SELECT name, type, default_kind, default_expression, compression_codec, comment FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows


def _contract_tables(ch: Client) -> list[str]:
    return [
        r[0]
        for r in ch.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name",
            parameters={"db": DB},
        ).result_rows
    ]


def _by_name() -> dict[str, str]:
    return {m.group(2): s for s in _statements(CLUSTER) if (m := _CREATED.match(s))}


_ALTERED = re.compile(r"^ALTER TABLE (\w+) ON CLUSTER")


def _alters(table: str) -> list[str]:
    """The later cluster migrations' ALTERs of `table`, in file order, as a single server would run them."""
    return [_ON_CLUSTER.sub("", s, count=1) for s in _statements(CLUSTER) if (m := _ALTERED.match(s)) and m.group(1) == table]


@pytest.fixture(scope="module")
def local_tables(client: Client) -> list[str]:
    """Every `<table>_local`, created with the single-node engine in LOCAL_DB; returns the contract names."""
    by_name = _by_name()
    tables = _contract_tables(client)
    for table in tables:
        _run_in(client, LOCAL_DB, _local_single_node(by_name[f"{table}_local"]))
        for alter in _alters(f"{table}_local"):
            _run_in(client, LOCAL_DB, alter)
    return tables


def test_every_statement_parses_and_targets_the_cluster(client: Client) -> None:
    cluster_wide = _statements(CLUSTER) + [s for s in _statements(RETENTION) if "_local" in s]
    statements = _statements(CLUSTER) + _statements(RETENTION)
    assert len(cluster_wide) >= 25
    for statement in statements:
        formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]
        assert ("ON CLUSTER `{cluster}`" in formatted) == (statement in cluster_wide), statement[:80]


def test_a_broken_statement_is_rejected_by_the_parser(client: Client) -> None:
    """The parse check can fail: ClickHouse's parser refuses a mangled engine clause."""
    broken = _statements(CLUSTER)[1].replace("ORDER BY", "ORDER", 1)
    with pytest.raises(Exception, match="Syntax error"):
        client.query("SELECT formatQuery({q:String})", parameters={"q": broken})


def test_cluster_ddl_covers_every_object_of_the_single_node_migrations(client: Client) -> None:
    created = {m.group(2) for s in _statements(CLUSTER) if (m := _CREATED.match(s))}
    tables = _contract_tables(client)
    assert set(tables) >= {"otel_traces", "llm_calls", "ingest_errors", "llm_usage_1m", "budget_status", "llm_latency_1m", "llm_drift", "change_events"}
    views = [
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine IN ('View', 'MaterializedView', 'Null')", parameters={"db": DB}
        ).result_rows
    ]
    assert {"otlp_ingest", "otlp_ingest_to_otel_traces"} <= set(views)
    single_node_functions = {m.group(2) for s in _statements(ROOT / "migrations") if (m := _CREATED.match(s)) and m.group(1) == "FUNCTION"}
    assert {"sketch_quantile", "sketch_quantile_gamma"} <= single_node_functions
    expected = {*tables, *(f"{t}_local" for t in tables), *views, *single_node_functions, "schema_migrations"}
    assert created == expected


def test_otlp_ingest_statements_equal_the_single_node_ones_plus_on_cluster() -> None:
    """The raw-OTLP path (Null table, view into the Distributed otel_traces, functions) has no per-node variant."""
    def otlp_statements(directory: Path) -> list[str]:
        return [s for path in sorted(directory.glob("00[56]_otlp_*.sql")) for s in Migration(0, path.name, path.read_text()).statements()]

    single, cluster = otlp_statements(ROOT / "migrations"), otlp_statements(CLUSTER)
    assert len(single) == len(cluster) == 9
    assert [_ON_CLUSTER.sub("", s, count=1) for s in cluster] == single


def test_local_tables_match_the_single_node_tables(client: Client, local_tables: list[str]) -> None:
    engines = {"MergeTree": "ReplicatedMergeTree", "AggregatingMergeTree": "ReplicatedAggregatingMergeTree", "ReplacingMergeTree": "ReplicatedReplacingMergeTree"}
    by_name = _by_name()
    for table in local_tables:
        statement = by_name[f"{table}_local"]
        replicated = _REPLICATED.search(statement)
        assert replicated is not None, table
        assert replicated.group("path") == f"/clickhouse/tables/{{shard}}/{{database}}/{table}_local"
        assert _columns(client, LOCAL_DB, f"{table}_local") == _columns(client, DB, table), table
        query = (
            "SELECT engine, partition_key, sorting_key, primary_key, "
            "(SELECT groupArray((name, type_full, expr, granularity)) FROM system.data_skipping_indices "
            " WHERE database = {db:String} AND table = {t:String}) FROM system.tables WHERE database = {db:String} AND name = {t:String}"
        )
        single = client.query(query, parameters={"db": DB, "t": table}).result_rows[0]
        local = client.query(query, parameters={"db": LOCAL_DB, "t": f"{table}_local"}).result_rows[0]
        assert local == single, table
        assert f"Replicated{single[0]}" == engines[single[0]] and statement.count(engines[single[0]]) == 1
        # ReplacingMergeTree's version column survives the swap.
        if single[0] == "ReplacingMergeTree":
            assert "'{replica}', computed_at)" in statement


def test_ttl_only_drop_parts_is_kept_on_raw_spans(client: Client, local_tables: list[str]) -> None:
    engine_full = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'otel_traces_local'", parameters={"db": LOCAL_DB}
    ).result_rows[0][0]
    assert "ttl_only_drop_parts = 1" in engine_full and "index_granularity = 8192" in engine_full


def test_distributed_tables_have_the_contract_columns_and_keys(client: Client) -> None:
    """A Distributed table needs a cluster to exist, so its columns are checked on a Memory twin."""
    by_name = _by_name()
    for table in _contract_tables(client):
        distributed = _DISTRIBUTED.search(by_name[table])
        assert distributed is not None, table
        assert distributed.group("local") == f"{table}_local"
        key = distributed.group("key").strip()
        if table in FENCED:
            assert key == PARTITION_KEY, table
        twin = _DISTRIBUTED.sub("ENGINE = Memory", _ON_CLUSTER.sub("", by_name[table], count=1))
        _run_in(client, DIST_DB, twin)
        for alter in _alters(table):
            _run_in(client, DIST_DB, alter)
        # Codecs live on the storing tables only; everything else is the contract table's.
        strip = lambda rows: [r[:4] + r[5:] for r in rows]  # noqa: E731
        assert strip(_columns(client, DIST_DB, table)) == strip(_columns(client, DB, table)), table
        # The sharding key evaluates on the table's own columns to an integer (Distributed requires it).
        key_type = client.query(f"DESCRIBE (SELECT {key} AS k FROM `{DB}`.`{table}`)").result_rows[0][1]
        assert key_type == "UInt64", (table, key_type)


def test_partition_sharding_key_keeps_each_source_on_one_shard(client: Client) -> None:
    """Key = Kafka partition of '<topic id>/<partition>': partition p goes to shard p mod shards."""
    sources = ["AbCdEfGhIjKlMnOpQrStUv/0", "AbCdEfGhIjKlMnOpQrStUv/7", "x/y/11", "AbCdEfGhIjKlMnOpQrStUv/23", ""]
    rows = client.query(
        f"SELECT s, {PARTITION_KEY.replace('_ingest_source', 's')} AS k, toTypeName(k) "
        "FROM (SELECT arrayJoin({sources:Array(String)})::LowCardinality(String) AS s)",
        parameters={"sources": sources},
    ).result_rows
    assert [(r[0], r[1]) for r in rows] == [(sources[0], 0), (sources[1], 7), (sources[2], 11), (sources[3], 23), ("", 0)]
    assert {r[2] for r in rows} == {"UInt64"}


def test_single_node_retention_applies_to_the_real_tables(client: Client) -> None:
    expected = {
        "otel_traces": "toDate(Timestamp) + toIntervalDay(14)",
        "llm_calls": "toDate(ts) + toIntervalDay(90)",
        "ingest_errors": "toDate(ts) + toIntervalDay(30)",
        "llm_usage_1m": "window_start + toIntervalDay(400)",
        "llm_latency_1m": "window_start + toIntervalDay(400)",
        "llm_drift": "toDateTime(window_start) + toIntervalDay(400)",
        "budget_status": "period_end + toIntervalDay(400)",
    }
    for statement in (s for s in _statements(RETENTION) if "_local" not in s):
        _run_in(client, DB, statement)
    for table, ttl in expected.items():
        create = client.query(f"SHOW CREATE TABLE `{DB}`.`{table}`").result_rows[0][0]
        assert f"TTL {ttl}" in create, (table, create)
    create = client.query(f"SHOW CREATE TABLE `{DB}`.change_events").result_rows[0][0]
    assert "TTL" not in create


def test_cluster_retention_names_the_local_tables_with_the_same_ttls(client: Client, local_tables: list[str]) -> None:
    single = [s for s in _statements(RETENTION) if "_local" not in s]
    cluster = [s for s in _statements(RETENTION) if "_local" in s]
    assert [re.sub(r"^ALTER TABLE (\w+)_local ON CLUSTER '\{cluster\}'", r"ALTER TABLE \1", s) for s in cluster] == single
    for statement in cluster:
        _run_in(client, LOCAL_DB, _ON_CLUSTER.sub("", statement, count=1))
    create = client.query(f"SHOW CREATE TABLE `{LOCAL_DB}`.otel_traces_local").result_rows[0][0]
    assert "TTL toDate(Timestamp) + toIntervalDay(14)" in create
