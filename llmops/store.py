"""Open the store for reading from any process.

An embedded chDB store belongs to the worker while it runs, so readers go
through the worker's SQL endpoint; when nothing serves it, they open the
directory themselves. A server DSN is used directly.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from llmops.config import Settings
from sinks.clickhouse.client import connect

__all__ = ["open_reader", "endpoint_alive", "local_host"]


def endpoint_alive(host: str, port: int, timeout_s: float = 0.5, *, tls_ca: Path | None = None) -> bool:
    """The endpoint answers /ping (over HTTPS, trusting `tls_ca`, when it serves TLS)."""
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca is not None else None
    scheme = "https" if tls_ca is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{port}/ping", timeout=timeout_s, context=context) as response:
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
    sql = settings.sql
    if endpoint_alive(host, sql.port, tls_ca=sql.tls_cert_file):
        credentials = {"username": sql.user, "password": sql.password.get_secret_value()} if sql.password is not None else {}
        tls = {"interface": "https", "ca_cert": str(sql.tls_cert_file)} if sql.tls_cert_file is not None else {}
        return clickhouse_connect.get_client(
            host=host, port=sql.port, database=settings.clickhouse.database, compress=False, autogenerate_session_id=False,
            **credentials, **tls,
        )  # fmt: skip
    return connect(settings.clickhouse_dsn, settings.clickhouse.database, readonly=True)
