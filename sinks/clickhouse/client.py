"""Open a clickhouse-connect client from a DSN: chdb:///dir (embedded) or http(s)://host (server)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

__all__ = ["connect", "is_embedded"]


def is_embedded(dsn: str) -> bool:
    return dsn.startswith("chdb://")


def connect(dsn: str, database: str | None = None, *, create_database: bool = False, readonly: bool = False) -> Client:
    """One code path for both stores; the DSN decides which engine answers."""
    if is_embedded(dsn):
        path = urlparse(dsn).path
        if path:
            Path(path).mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=dsn)
        if create_database and database:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        if database:
            client.command(f"USE `{database}`")
            client.database = database
    else:
        if create_database and database:
            bootstrap = clickhouse_connect.get_client(dsn=dsn)
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            bootstrap.close()
        client = clickhouse_connect.get_client(dsn=dsn, database=database or None)
    if readonly:
        client.set_client_setting("readonly", "1")
    return client
