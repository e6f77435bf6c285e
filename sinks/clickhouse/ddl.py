"""Render the DDL templates in schemas/migrations (and schemas/retention/ttl.sql) for one server or a cluster.

Why: each table, view and function is written once. The single-node migrations the runner applies and
the `ON CLUSTER` DDL an operator applies to a cluster are two renderings of the same Jinja templates, as
the OpenTelemetry Collector's clickhouseexporter renders both from one template (`ENGINE = %s`,
`ON CLUSTER %s`). The single-node rendering of a released migration is frozen: its checksum is stored
in schema_migrations, so templates and the macros they import must keep rendering the same text.

What a template may use (nothing else varies between the two renderings):

- `{% call table("name", shard_by=...) %}(columns) ENGINE = ... {% endcall %}`: a table. On a cluster a
  `*MergeTree` table becomes `name_local` with the Replicated engine (Keeper path
  `/clickhouse/tables/{shard}/{database}/name_local`, replica `{replica}`) plus a `Distributed` table
  `name` over it, sharded by `shard_by`; `non_replicated_deduplication_window` is left out (replicated
  tables deduplicate by themselves). Any other engine (`Null`) only gets `ON CLUSTER`.
- `{% call alter_table("name") %}clauses{% endcall %}`: an ALTER of such a table, one clause per line.
  On a cluster it runs on `name_local`, and its column clauses also on the Distributed `name`.
- `{{ on_cluster }}`: after the object name of views, functions and other statements ('' on one node).
- `by_partition`: the sharding key of fenced tables (the Kafka partition of `_ingest_source`).

A per-window signal whose `TableSpec` types every column needs no migration: its table is rendered
from the spec (`signal_table_template`) through the same `table()` macro, after the migrations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from processors.core.registry import SIGNALS
from processors.core.signal import Signal, TableSpec

__all__ = [
    "BY_PARTITION",
    "CLUSTER_MACRO",
    "migration_names",
    "migrations_directory",
    "render",
    "render_all",
    "render_retention",
    "render_signal_table",
    "schema_migrations_ddl",
    "script",
    "signal_table_template",
    "signal_tables",
    "split_statements",
]

# The Kafka partition number of '<topic id>/<partition>': all rows of one source land on one shard, so one
# insert is atomic per source and the sink's fence max(_ingest_offset) is exact (schemas/cluster/README.md).
BY_PARTITION = "toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1])"
# The server-side macro for the cluster name; `llmops migrate --print --cluster NAME` may name it instead.
CLUSTER_MACRO = "{cluster}"

_ENGINE = re.compile(r"^ENGINE = (?P<engine>\w+)(?:\((?P<args>.*)\))?$", re.M)
_SETTINGS = re.compile(r"^SETTINGS (?P<items>.*)$", re.M)
_NON_REPLICATED = "non_replicated_deduplication_window"
_CLAUSE = re.compile(r"^ +[A-Z]+ [A-Z]")
_COLUMN_CLAUSE = re.compile(r"^ +(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR) COLUMN\b")
_RETENTION = "ttl.sql"  # in schemas/retention: optional, applied by an operator, never by the runner
# A migration is NNN_name.sql; other files there (macros.sql) are only imported by migrations.
_MIGRATION = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# How each merge of processors/core/signal.py is stored: the SimpleAggregateFunction background merges apply.
_STORED_MERGE = {"sum": "sum", "min": "min", "max": "max", "any": "any", "sum_map": "sumMap"}


def migrations_directory() -> Path:
    return Path(str(resources.files("schemas") / "migrations"))


def migration_names(directory: Path | None = None) -> list[str]:
    """The migration templates in order; two files with one number are refused."""
    root = directory or migrations_directory()
    names = sorted(path.name for path in root.iterdir() if _MIGRATION.match(path.name))
    versions = [name[:3] for name in names]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration numbers in {root}: {versions}")
    return names


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class _Flavour:
    """One rendering: `cluster` None for a single server. Remembers the tables it gave a Distributed twin."""

    cluster: str | None
    distributed: set[str] = field(default_factory=set)

    @property
    def on_cluster(self) -> str:
        return "" if self.cluster is None else f" ON CLUSTER {_literal(self.cluster)}"

    def table(self, name: str, shard_by: str | None = None, *, caller: Callable[[], str]) -> str:
        body = caller()
        engine = _ENGINE.search(body)
        if engine is None:
            raise ValueError(f"table {name}: no line 'ENGINE = ...' in its template")
        storing = engine["engine"].endswith("MergeTree")
        if storing and shard_by is None:
            raise ValueError(f"table {name}: a {engine['engine']} table needs shard_by= (its Distributed sharding key)")
        if self.cluster is None:
            return f"CREATE TABLE IF NOT EXISTS {name}\n{body}"
        if not storing:
            return f"CREATE TABLE IF NOT EXISTS {name}{self.on_cluster}\n{body}"
        local = f"{name}_local"
        args = [_literal(f"/clickhouse/tables/{{shard}}/{{database}}/{local}"), "'{replica}'"]
        args += [engine["args"]] if engine["args"] else []
        replicated = f"ENGINE = Replicated{engine['engine']}({', '.join(args)})"
        tail = body[len(body.rstrip()) :]
        body = body[: engine.start()] + replicated + body[engine.end() :]
        body = _SETTINGS.sub(_drop_non_replicated, body).rstrip()
        self.distributed.add(name)
        return (
            f"CREATE TABLE IF NOT EXISTS {local}{self.on_cluster}\n{body};\n\n"
            f"CREATE TABLE IF NOT EXISTS {name}{self.on_cluster} AS {local}\n"
            f"ENGINE = Distributed({_literal(self.cluster)}, currentDatabase(), {local}, {shard_by}){tail}"
        )

    def alter_table(self, name: str, *, caller: Callable[[], str]) -> str:
        body = caller()
        clauses = body.rstrip().split(",\n")
        if not all(_CLAUSE.match(clause) for clause in clauses):
            raise ValueError(f"alter_table({name!r}): write one clause per line, each ending with ',' but the last")
        if self.cluster is None:
            return f"ALTER TABLE {name}\n{body}"
        if name not in self.distributed:
            raise ValueError(f"alter_table({name!r}): {name} is not created by table() in an earlier migration")
        tail = body[len(body.rstrip()) :]
        statement = f"ALTER TABLE {name}_local{self.on_cluster}\n{body.rstrip()}"
        columns = [clause for clause in clauses if _COLUMN_CLAUSE.match(clause)]
        if columns:
            statement += f";\n\nALTER TABLE {name}{self.on_cluster}\n" + ",\n".join(columns)
        return statement + tail


def _drop_non_replicated(match: re.Match[str]) -> str:
    items = [item for item in match["items"].split(", ") if not item.startswith(_NON_REPLICATED)]
    return f"SETTINGS {', '.join(items)}" if items else ""


def _environment(directory: Path, flavour: _Flavour) -> Environment:
    env = Environment(
        loader=FileSystemLoader([directory, Path(str(resources.files("schemas") / "retention"))]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        autoescape=False,
    )
    env.globals.update(
        table=flavour.table, alter_table=flavour.alter_table, on_cluster=flavour.on_cluster, by_partition=BY_PARTITION
    )
    return env


def signal_tables(signals: Sequence[Signal[Any]] = SIGNALS) -> list[TableSpec]:
    """The tables the registry's signals declare themselves (every column typed), in registry order."""
    return [signal.table for signal in signals if signal.table.declares_table]


def signal_table_template(spec: TableSpec) -> str:
    """The DDL template of a table declared by its signal's spec, as a migration would write it.

    An AggregatingMergeTree: key columns as they are, value columns as SimpleAggregateFunction of their
    merge (so background merges apply the spec's merge rules), the sink's delivery columns with
    max(_ingest_offset); partitioned by month of the window, ordered by the key and `_ingest_source`.
    """
    names = [spec.name, *spec.column_names]
    bad = [name for name in names if not _IDENTIFIER.match(name)]
    if bad:
        raise ValueError(f"table {spec.name}: {bad} are not plain lower-case identifiers")
    columns = "".join(f"    {c.name} {_stored_type(c.merge, c.type)},\n" for c in spec.columns)
    order = ", ".join([*spec.key, "_ingest_source"])
    return (
        '{% from "macros.sql" import delivery_columns %}\n'
        f'{{% call table("{spec.name}", shard_by=by_partition) %}}\n'
        f"(\n{columns}"
        '    {{ delivery_columns(offset="SimpleAggregateFunction(max, UInt64)") }}\n'
        ")\n"
        "ENGINE = AggregatingMergeTree\n"
        f"PARTITION BY toYYYYMM({spec.window_column})\n"
        f"ORDER BY ({order})\n"
        "SETTINGS non_replicated_deduplication_window = 1000{% endcall %};\n"
    )


def _stored_type(merge: str, value_type: str) -> str:
    stored = _STORED_MERGE.get(merge)
    return value_type if stored is None else f"SimpleAggregateFunction({stored}, {value_type})"


def _signal_retention_template(spec: TableSpec) -> str:
    return (
        f'{{% call alter_table("{spec.name}") %}}\n'
        f"    MODIFY TTL toDateTime({spec.window_column}) + INTERVAL {spec.retention_days} DAY{{% endcall %}};\n"
    )


def render_signal_table(spec: TableSpec) -> str:
    """The single-node text of a spec-declared table: what the migration runner applies."""
    return _environment(migrations_directory(), _Flavour(None)).from_string(signal_table_template(spec)).render()


def render(name: str, directory: Path | None = None) -> str:
    """The single-node text of one migration template: exactly what the runner applies and checksums."""
    directory = directory or migrations_directory()
    return _environment(directory, _Flavour(None)).get_template(name).render()


def schema_migrations_ddl(database: str | None = None, cluster: str | None = None) -> str:
    """The runner's bookkeeping table; on a cluster replicated to every node (no {shard} in its Keeper path)."""
    table = "schema_migrations" if database is None else f"`{database}`.schema_migrations"
    engine = "ReplacingMergeTree"
    on_cluster = ""
    if cluster is not None:
        engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{replica}')"
        on_cluster = f" ON CLUSTER {_literal(cluster)}"
    return (
        f"CREATE TABLE IF NOT EXISTS {table}{on_cluster} "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        f"ENGINE = {engine} ORDER BY version"
    )


def split_statements(sql: str) -> list[str]:
    """Statements end with ';' at the end of a line; comment-only chunks are dropped."""
    statements = []
    for chunk in re.split(r";\s*$", sql, flags=re.MULTILINE):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            statements.append(body)
    return statements


def render_all(
    cluster: str | None = None, directory: Path | None = None, signals: Sequence[Signal[Any]] = SIGNALS
) -> list[tuple[str, list[str]]]:
    """Every migration rendered in order, then the spec-declared signal tables, for one server (`cluster`
    None) or a cluster: [(file or 'signal table NAME', statements)].

    Led by schema_migrations. One flavour renders all files, so an ALTER in a later migration knows
    which tables have a Distributed twin.
    """
    directory = directory or migrations_directory()
    flavour = _Flavour(cluster)
    env = _environment(directory, flavour)
    rendered = [("schema_migrations", [schema_migrations_ddl(cluster=cluster)])]
    for name in migration_names(directory):
        rendered.append((name, split_statements(env.get_template(name).render())))
    for spec in signal_tables(signals):
        statements = split_statements(env.from_string(signal_table_template(spec)).render())
        rendered.append((f"signal table {spec.name}", statements))
    return rendered


def render_retention(
    cluster: str | None = None, signals: Sequence[Signal[Any]] = SIGNALS
) -> list[tuple[str, list[str]]]:
    """The optional TTLs of schemas/retention/ttl.sql, on the tables (or `_local` tables) the migrations create,
    and those of spec-declared signal tables with `retention_days`."""
    flavour = _Flavour(cluster)
    env = _environment(migrations_directory(), flavour)
    for name in migration_names():
        env.get_template(name).render()  # the flavour learns which tables are stored
    rendered = [(_RETENTION, split_statements(env.get_template(_RETENTION).render()))]
    for spec in signal_tables(signals):
        env.from_string(signal_table_template(spec)).render()
        if spec.retention_days is not None:
            ttl = split_statements(env.from_string(_signal_retention_template(spec)).render())
            rendered.append((f"signal table {spec.name}", ttl))
    return rendered


def script(cluster: str | None = None, *, retention: bool = False, signals: Sequence[Signal[Any]] = SIGNALS) -> str:
    """The rendered DDL (or TTLs) as one script for `clickhouse-client --multiquery`, a comment naming each file."""
    rendered = render_retention(cluster, signals) if retention else render_all(cluster, signals=signals)
    parts = [f"-- {name}\n" + "".join(f"{statement};\n\n" for statement in statements) for name, statements in rendered]
    return "".join(parts).rstrip("\n") + "\n"
