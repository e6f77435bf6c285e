"""Apply schemas/migrations/NNN_name.sql in order, once each, recorded in schema_migrations; then create
the tables that per-window signals declare in their own spec.

The files are templates (sinks/clickhouse/ddl.py); what runs and what is checksummed is their
single-node rendering, which for every released migration is the text it was applied with. A
spec-declared table is created if it is missing (CREATE TABLE IF NOT EXISTS); changing an existing
one takes a numbered migration, as for any table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.core.registry import SIGNALS
from processors.core.signal import Signal
from sinks.clickhouse.ddl import (
    migration_names,
    migrations_directory,
    render,
    render_signal_table,
    schema_migrations_ddl,
    signal_tables,
    split_statements,
)

__all__ = ["Migration", "available_migrations", "apply_migrations"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """Statements end with ';' at the end of a line; comment-only chunks are dropped."""
        return split_statements(self.sql)


def available_migrations(directory: Path | None = None) -> list[Migration]:
    root = directory or migrations_directory()
    return [Migration(int(name[:3]), name, render(name, root)) for name in migration_names(root)]


def apply_migrations(
    client: Client, database: str, directory: Path | None = None, signals: Sequence[Signal[Any]] = SIGNALS
) -> list[str]:
    """Idempotent: already-applied versions are skipped; returns the names applied now (and
    'signal table NAME' for each spec-declared table created now)."""
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(schema_migrations_ddl(database))
    rows = client.query(f"SELECT version, checksum FROM `{database}`.schema_migrations FINAL").result_rows
    done = {row[0]: row[1] for row in rows}
    applied = []
    for migration in available_migrations(directory):
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                log.warning("migration %s changed after it was applied; not re-applying", migration.name)
            continue
        for statement in migration.statements():
            _run(client, database, statement)
        client.insert(
            f"`{database}`.schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration.name)
        log.info("applied migration %s", migration.name)
    for spec in signal_tables(signals):
        exists = client.query(
            "SELECT count() FROM system.tables WHERE database = {d:String} AND name = {t:String}",
            parameters={"d": database, "t": spec.name},
        ).result_rows[0][0]
        if exists:
            continue
        for statement in split_statements(render_signal_table(spec)):
            _run(client, database, statement)
        applied.append(f"signal table {spec.name}")
        log.info("created table %s from its signal's spec", spec.name)
    return applied


def _run(client: Client, database: str, statement: str) -> None:
    """Run one DDL statement with `database` as the current database (tables are written unqualified)."""
    previous = client.database
    client.database = database
    try:
        client.command(statement)
    finally:
        client.database = previous
