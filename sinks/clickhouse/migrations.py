"""Apply schemas/migrations/NNN_name.sql in order, once each, recorded in schema_migrations.

The files are templates (sinks/clickhouse/ddl.py); what runs and what is checksummed is their
single-node rendering, which for every released migration is the text it was applied with.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from sinks.clickhouse.ddl import migration_names, migrations_directory, render, schema_migrations_ddl, split_statements

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


def apply_migrations(client: Client, database: str, directory: Path | None = None) -> list[str]:
    """Idempotent: already-applied versions are skipped; returns the names applied now."""
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
    return applied


def _run(client: Client, database: str, statement: str) -> None:
    """Run one DDL statement with `database` as the current database (tables are written unqualified)."""
    previous = client.database
    client.database = database
    try:
        client.command(statement)
    finally:
        client.database = previous
