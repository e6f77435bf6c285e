"""Apply schemas/migrations/NNN_name.sql in order, once each, recorded in schema_migrations."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver.client import Client

__all__ = ["Migration", "available_migrations", "apply_migrations"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


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
        chunks = re.split(r";\s*$", self.sql, flags=re.MULTILINE)
        statements = []
        for chunk in chunks:
            body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
            if body:
                statements.append(body)
        return statements


def available_migrations(directory: Path | None = None) -> list[Migration]:
    root = directory or Path(str(resources.files("schemas") / "migrations"))
    found = []
    for path in sorted(root.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate migration numbers in {root}: {versions}")
    return found


def apply_migrations(client: Client, database: str, directory: Path | None = None) -> list[str]:
    """Idempotent: already-applied versions are skipped; returns the names applied now."""
    client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    client.command(
        f"CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0]: row[1] for row in client.query(f"SELECT version, checksum FROM `{database}`.schema_migrations FINAL").result_rows}
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
