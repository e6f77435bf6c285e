"""The DDL rendered from schemas/migrations (sinks/clickhouse/ddl.py), single-node and cluster, against ClickHouse.

No Keeper or cluster here, so: every rendered statement goes through ClickHouse's own parser (formatQuery in
chDB); the whole cluster rendering runs, in order, in its own database with each Replicated engine swapped
for its single-node engine and each Distributed table for a Memory table of the same structure; the
`<table>_local` tables it creates are compared column by column (and keys, indexes) with the tables the
real migrations created, the Distributed ones with the contract tables; the retention ALTERs run for real.
The single-node rendering of every released migration is pinned to the checksum it was applied with.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from llmops.cli import main
from processors.core.budgets import BUDGET_STATUS_COLUMNS
from processors.core.drift.stream import CHANGE_COLUMNS, DRIFT_COLUMNS
from processors.core.latency import LATENCY_COLUMNS
from processors.core.rows import INGEST_ERRORS_COLUMNS, LLM_CALLS_COLUMNS
from processors.core.usage import USAGE_COLUMNS
from sinks.clickhouse.client import connect
from sinks.clickhouse.ddl import BY_PARTITION, CLUSTER_MACRO, render_all, render_retention, script, split_statements
from sinks.clickhouse.migrations import apply_migrations, available_migrations

DB = "llmops"
CLUSTER_DB = "llmops_cluster_check"

# sha256[:16] of each released migration's text, as stored in schema_migrations of every existing store.
# A template or macro change that alters one of these makes workers log "changed after it was applied".
APPLIED_CHECKSUMS = {
    "001_core.sql": "c23b6d2201289c66",
    "002_usage_and_budgets.sql": "f61c540672b6e447",
    "003_llm_latency_1m.sql": "9ad0b6ceb0866833",
    "004_drift_tables.sql": "41faa689cb65d6c2",
    "005_otlp_ingest.sql": "16a0a0c1afb0b45f",
    "006_otlp_view_planning.sql": "c0ff811fcc803294",
    "007_pricing_columns.sql": "7d0747e3e13ace1c",
    "008_requested_model_and_unpriced_usage.sql": "0e33ad2567725e4e",
    "009_otlp_view_time_window.sql": "f8120d1ef3770bfd",
}

_ON_CLUSTER = re.compile(r"\s+ON CLUSTER '\{cluster\}'")
_REPLICATED = re.compile(r"ENGINE = Replicated(\w*MergeTree)\('(?P<path>[^']*)', '\{replica\}'(?P<rest>(?:, [^)]*)?)\)")
_DISTRIBUTED = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<name>\w+) ON CLUSTER '\{cluster\}' AS (?P<local>\w+)\n"
    r"ENGINE = Distributed\('\{cluster\}', currentDatabase\(\), (?P=local), (?P<key>.+)\)$",
    re.S,
)
_CREATED = re.compile(r"^CREATE (TABLE|VIEW|MATERIALIZED VIEW|FUNCTION) IF NOT EXISTS (\w+)")
# Tables whose sink inserts carry fences (_ingest_source = '<topic id>/<partition>').
FENCED = {
    "otel_traces",
    "llm_calls",
    "ingest_errors",
    "llm_usage_1m",
    "llm_latency_1m",
    "llm_evaluations",
    "llm_evaluation_1m",
}
_DELIVERY = ("_ingest_source", "_ingest_offset")


def _cluster() -> list[str]:
    return [s for _, statements in render_all(CLUSTER_MACRO) for s in statements]


def _retention(cluster: str | None) -> list[str]:
    return [s for _, statements in render_retention(cluster) for s in statements]


def _single_node(statement: str) -> str:
    """What a single server would run: no ON CLUSTER, plain engines, a Memory table for a Distributed one."""
    statement = _ON_CLUSTER.sub("", statement, count=1)
    statement = re.sub(r"ENGINE = Distributed\(.*\)$", "ENGINE = Memory", statement, flags=re.S)
    return _REPLICATED.sub(
        lambda m: f"ENGINE = {m.group(1)}" + (f"({m.group('rest')[2:]})" if m.group("rest") else ""), statement
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One chDB store for the module (a process opens one chDB path at a time)."""
    path = Path(tempfile.mkdtemp(prefix="llmops_cluster_ddl_"))
    ch = connect(f"chdb://{path}", DB, create_database=True)
    try:
        apply_migrations(ch, DB)
        ch.command(f"CREATE DATABASE IF NOT EXISTS `{CLUSTER_DB}`")
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


@pytest.fixture(scope="module")
def cluster_db(client: Client) -> str:
    """The whole cluster rendering, in order, as one server would run it (SQL functions are server-wide and exist)."""
    for statement in _cluster():
        _run_in(client, CLUSTER_DB, _single_node(statement))
    return CLUSTER_DB


def _columns(ch: Client, database: str, table: str) -> Sequence[Sequence[Any]]:
    return ch.query(
        "SELECT name, type, default_kind, default_expression, compression_codec, comment FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        parameters={"db": database, "t": table},
    ).result_rows


def _contract_tables(ch: Client) -> list[str]:
    return [
        r[0]
        for r in ch.query(
            "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree' "
            "AND name != 'schema_migrations' ORDER BY name",
            parameters={"db": DB},
        ).result_rows
    ]


def _by_name() -> dict[str, str]:
    return {m.group(2): s for s in _cluster() if (m := _CREATED.match(s))}


def test_single_node_rendering_is_the_text_each_migration_was_applied_with(client: Client) -> None:
    rendered = {m.name: m.checksum for m in available_migrations()}
    assert {name: rendered[name] for name in APPLIED_CHECKSUMS} == APPLIED_CHECKSUMS
    stored = {
        row[0]: row[1] for row in client.query(f"SELECT name, checksum FROM `{DB}`.schema_migrations FINAL").result_rows
    }
    assert stored == rendered


def test_printed_single_node_ddl_creates_what_the_runner_created(client: Client) -> None:
    """`llmops migrate --print` applied by hand gives the tables, views and columns the workers' runner gives."""
    printed = "llmops_printed_check"
    client.command(f"CREATE DATABASE IF NOT EXISTS `{printed}`")
    for statement in split_statements(script()):
        _run_in(client, printed, statement)
    query = (
        "SELECT name, engine, partition_key, sorting_key, primary_key, "
        "replaceAll(as_select, {db:String} || '.', '') FROM system.tables WHERE database = {db:String} ORDER BY name"
    )
    tables = client.query(query, parameters={"db": DB}).result_rows
    assert client.query(query, parameters={"db": printed}).result_rows == tables
    assert len(tables) >= 13  # 8 MergeTree tables, schema_migrations, otlp_ingest, its view, 2 views
    for table in (row[0] for row in tables):
        assert _columns(client, printed, table) == _columns(client, DB, table), table


def test_every_statement_parses_and_targets_the_cluster(client: Client) -> None:
    cluster_wide = _cluster() + _retention(CLUSTER_MACRO)
    statements = cluster_wide + _retention(None)
    assert len(cluster_wide) >= 25
    for statement in statements:
        formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]
        assert ("ON CLUSTER `{cluster}`" in formatted) == (statement in cluster_wide), statement[:80]


def test_a_broken_statement_is_rejected_by_the_parser(client: Client) -> None:
    """The parse check can fail: ClickHouse's parser refuses a mangled engine clause."""
    broken = _cluster()[1].replace("ORDER BY", "ORDER", 1)
    with pytest.raises(Exception, match="Syntax error"):
        client.query("SELECT formatQuery({q:String})", parameters={"q": broken})


def test_cluster_ddl_covers_every_object_of_the_single_node_migrations(client: Client) -> None:
    created = {m.group(2) for s in _cluster() if (m := _CREATED.match(s))}
    tables = _contract_tables(client)
    assert set(tables) >= {
        "otel_traces",
        "llm_calls",
        "ingest_errors",
        "llm_usage_1m",
        "budget_status",
        "llm_latency_1m",
        "llm_drift",
        "change_events",
    }
    views = [
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables "
            "WHERE database = {db:String} AND engine IN ('View', 'MaterializedView', 'Null')",
            parameters={"db": DB},
        ).result_rows
    ]
    assert {"otlp_ingest", "otlp_ingest_to_otel_traces"} <= set(views)
    single_node = [statement for _, statements in render_all() for statement in statements]
    single_node_functions = {m.group(2) for s in single_node if (m := _CREATED.match(s)) and m.group(1) == "FUNCTION"}
    assert {"sketch_quantile", "sketch_quantile_gamma"} <= single_node_functions
    expected = {*tables, *(f"{t}_local" for t in tables), *views, *single_node_functions, "schema_migrations"}
    assert created == expected


def test_otlp_ingest_statements_equal_the_single_node_ones_plus_on_cluster() -> None:
    """The raw-OTLP path (Null table, view into the Distributed otel_traces, functions) has no per-node variant."""

    def otlp(rendered: list[tuple[str, list[str]]]) -> list[str]:
        return [s for name, statements in rendered if re.match(r"00[56]_otlp_", name) for s in statements]

    single, cluster = otlp(render_all()), otlp(render_all(CLUSTER_MACRO))
    assert len(single) == len(cluster) == 9
    assert [_ON_CLUSTER.sub("", s, count=1) for s in cluster] == single


def test_local_tables_match_the_single_node_tables(client: Client, cluster_db: str) -> None:
    engines = {
        "MergeTree": "ReplicatedMergeTree",
        "AggregatingMergeTree": "ReplicatedAggregatingMergeTree",
        "ReplacingMergeTree": "ReplicatedReplacingMergeTree",
    }
    by_name = _by_name()
    for table in _contract_tables(client):
        statement = by_name[f"{table}_local"]
        replicated = _REPLICATED.search(statement)
        assert replicated is not None, table
        assert replicated.group("path") == f"/clickhouse/tables/{{shard}}/{{database}}/{table}_local"
        assert "non_replicated_deduplication_window" not in statement
        assert _columns(client, cluster_db, f"{table}_local") == _columns(client, DB, table), table
        query = (
            "SELECT engine, partition_key, sorting_key, primary_key, "
            "(SELECT groupArray((name, type_full, expr, granularity)) FROM system.data_skipping_indices "
            " WHERE database = {db:String} AND table = {t:String}) "
            "FROM system.tables WHERE database = {db:String} AND name = {t:String}"
        )
        single = client.query(query, parameters={"db": DB, "t": table}).result_rows[0]
        local = client.query(query, parameters={"db": cluster_db, "t": f"{table}_local"}).result_rows[0]
        assert local == single, table
        assert f"Replicated{single[0]}" == engines[single[0]] and statement.count(engines[single[0]]) == 1
        # ReplacingMergeTree's version column survives the swap.
        if single[0] == "ReplacingMergeTree":
            version = client.query(
                "SELECT extract(engine_full, 'ReplacingMergeTree\\((\\w+)\\)') FROM system.tables "
                "WHERE database = {db:String} AND name = {t:String}",
                parameters={"db": DB, "t": table},
            ).result_rows[0][0]
            assert version and f"'{{replica}}', {version})" in statement, table


def test_ttl_only_drop_parts_is_kept_on_raw_spans(client: Client, cluster_db: str) -> None:
    engine_full = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'otel_traces_local'",
        parameters={"db": cluster_db},
    ).result_rows[0][0]
    assert "ttl_only_drop_parts = 1" in engine_full and "index_granularity = 8192" in engine_full


def test_distributed_tables_have_the_contract_columns_and_keys(client: Client, cluster_db: str) -> None:
    """A Distributed table needs a cluster to exist, so its columns are checked on the Memory table in its place."""
    by_name = _by_name()
    for table in _contract_tables(client):
        distributed = _DISTRIBUTED.match(by_name[table])
        assert distributed is not None, table
        assert distributed.group("local") == f"{table}_local"
        key = distributed.group("key").strip()
        if table in FENCED:
            assert key == BY_PARTITION, table
        # Codecs only matter on the storing tables; everything else is the contract table's (later ALTERs included).
        strip = lambda rows: [r[:4] + r[5:] for r in rows]  # noqa: E731
        assert strip(_columns(client, cluster_db, table)) == strip(_columns(client, DB, table)), table
        # The sharding key evaluates on the table's own columns to an integer (Distributed requires it).
        key_type = client.query(f"DESCRIBE (SELECT {key} AS k FROM `{DB}`.`{table}`)").result_rows[0][1]
        assert key_type == "UInt64", (table, key_type)


def test_partition_sharding_key_keeps_each_source_on_one_shard(client: Client) -> None:
    """Key = Kafka partition of '<topic id>/<partition>': partition p goes to shard p mod shards."""
    sources = ["AbCdEfGhIjKlMnOpQrStUv/0", "AbCdEfGhIjKlMnOpQrStUv/7", "x/y/11", "AbCdEfGhIjKlMnOpQrStUv/23", ""]
    rows = client.query(
        f"SELECT s, {BY_PARTITION.replace('_ingest_source', 's')} AS k, toTypeName(k) "
        "FROM (SELECT arrayJoin({sources:Array(String)})::LowCardinality(String) AS s)",
        parameters={"sources": sources},
    ).result_rows
    assert [(r[0], r[1]) for r in rows] == [
        (sources[0], 0),
        (sources[1], 7),
        (sources[2], 11),
        (sources[3], 23),
        ("", 0),
    ]
    assert {r[2] for r in rows} == {"UInt64"}


def test_row_builders_write_exactly_the_columns_of_their_tables(client: Client) -> None:
    """The processors' column lists are the migrated tables' columns, in order, less the sink's delivery columns."""
    builders = {
        "llm_calls": LLM_CALLS_COLUMNS,
        "ingest_errors": INGEST_ERRORS_COLUMNS,
        "llm_usage_1m": USAGE_COLUMNS,
        "llm_latency_1m": LATENCY_COLUMNS,
        "budget_status": BUDGET_STATUS_COLUMNS,
        "llm_drift": DRIFT_COLUMNS,
        "change_events": CHANGE_COLUMNS,
    }
    for table, columns in builders.items():
        stored = [row[0] for row in _columns(client, DB, table) if row[0] not in _DELIVERY]
        assert list(columns) == stored, table


def test_migrate_print_renders_the_cluster_ddl_for_a_named_cluster(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--print", "--cluster", "prod's"]) == 0
    printed = capsys.readouterr().out
    assert printed == script("prod's")
    statements = split_statements(printed)
    assert len(statements) == len(_cluster())
    for statement in statements:
        formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]
        assert "ON CLUSTER `prod's`" in formatted, statement[:80]
    assert "Distributed('prod\\'s', currentDatabase(), llm_calls_local" in printed
    assert main(["migrate", "--print", "--retention", "--cluster", "prod"]) == 0
    assert split_statements(capsys.readouterr().out) == _retention("prod")
    assert main(["migrate", "--cluster", "prod"]) == 2
    assert "add --print" in capsys.readouterr().err


def test_a_template_that_breaks_the_rules_is_refused(tmp_path: Path) -> None:
    """Refused when rendered (the runner fails at start), not when a cluster applies half of it.

    The directory holds only this template (no macros.sql), so no spec-declared signal table is rendered with it."""
    template = tmp_path / "001_a.sql"
    body = "\n(x UInt8)\nENGINE = MergeTree\nORDER BY x"
    template.write_text('{% call table("t", shard_by=by_partition) %}' + body + "{% endcall %};\n")
    assert render_all(None, tmp_path, signals=())[1][1] == ["CREATE TABLE IF NOT EXISTS t" + body]
    template.write_text('{% call table("t") %}' + body + "{% endcall %};\n")
    for cluster in (None, CLUSTER_MACRO):
        with pytest.raises(ValueError, match="needs shard_by"):
            render_all(cluster, tmp_path, signals=())
    template.write_text('{% call alter_table("t") %}\n    ADD COLUMN y UInt8{% endcall %};\n')
    with pytest.raises(ValueError, match="not created by table"):
        render_all(CLUSTER_MACRO, tmp_path, signals=())
    template.write_text('{% call alter_table("t") %}\n    MODIFY ORDER BY (x,\n        y){% endcall %};\n')
    with pytest.raises(ValueError, match="one clause per line"):
        render_all(None, tmp_path, signals=())


def test_single_node_retention_applies_to_the_real_tables(client: Client) -> None:
    expected = {
        "otel_traces": "toDate(Timestamp) + toIntervalDay(14)",
        "llm_calls": "toDate(ts) + toIntervalDay(90)",
        "llm_evaluations": "toDate(ts) + toIntervalDay(90)",
        "ingest_errors": "toDate(ts) + toIntervalDay(30)",
        "llm_usage_1m": "window_start + toIntervalDay(400)",
        "llm_latency_1m": "window_start + toIntervalDay(400)",
        "llm_drift": "toDateTime(window_start) + toIntervalDay(400)",
        "budget_status": "period_end + toIntervalDay(400)",
        "llm_top_spenders_1h": "window_start + toIntervalDay(90)",
        "llm_evaluation_1m": "toDateTime(window_start) + toIntervalDay(400)",
    }
    for statement in _retention(None):
        _run_in(client, DB, statement)
    for table, ttl in expected.items():
        create = client.query(f"SHOW CREATE TABLE `{DB}`.`{table}`").result_rows[0][0]
        assert f"TTL {ttl}" in create, (table, create)
    create = client.query(f"SHOW CREATE TABLE `{DB}`.change_events").result_rows[0][0]
    assert "TTL" not in create


def test_cluster_retention_names_the_local_tables_with_the_same_ttls(client: Client, cluster_db: str) -> None:
    single, cluster = _retention(None), _retention(CLUSTER_MACRO)
    assert len(single) == 10  # schemas/retention/ttl.sql's 9, and llm_evaluation_1m's from its spec
    assert [
        re.sub(r"^ALTER TABLE (\w+)_local ON CLUSTER '\{cluster\}'", r"ALTER TABLE \1", s) for s in cluster
    ] == single
    for statement in cluster:
        _run_in(client, cluster_db, _ON_CLUSTER.sub("", statement, count=1))
    create = client.query(f"SHOW CREATE TABLE `{cluster_db}`.otel_traces_local").result_rows[0][0]
    assert "TTL toDate(Timestamp) + toIntervalDay(14)" in create
