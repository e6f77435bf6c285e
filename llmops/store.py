"""Open the store for reading from any process.

An embedded chDB store belongs to the worker while it runs, so readers go
through the worker's SQL endpoint; when nothing serves it, they open the
directory themselves. A server DSN is used directly.
"""

from __future__ import annotations

import urllib.request

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from llmops.config import Settings
from sinks.clickhouse.client import connect

__all__ = ["open_reader", "endpoint_alive", "local_host"]


def endpoint_alive(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout_s) as response:
            return response.status == 200 and response.read().startswith(b"Ok.")
    except OSError:
        return False


def local_host(listen: str) -> str:
    """Where a local client reaches a server bound to `listen` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if listen in ("0.0.0.0", "::") else listen


def open_reader(settings: Settings) -> Client:
    if not settings.embedded_store:
        return connect(settings.clickhouse_dsn, settings.clickhouse.database)
    host = local_host(settings.receiver.listen)
    if endpoint_alive(host, settings.sql.port):
        return clickhouse_connect.get_client(
            host=host, port=settings.sql.port, database=settings.clickhouse.database, compress=False, autogenerate_session_id=False
        )
    return connect(settings.clickhouse_dsn, settings.clickhouse.database, readonly=True)
