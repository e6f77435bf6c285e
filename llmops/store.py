"""Open the store for reading from any process, and be sure it is the store the user means.

An embedded chDB store belongs to the worker while it runs, so readers go
through the worker's SQL endpoint: the port comes from the stack file that
`llmops up` writes into the data dir (llmops.stack_state), else from the
settings. Before trusting an endpoint the reader asks it which store it
serves (its /ping answers a digest of the store's path) and compares it with
the data dir: another stack on the same port is refused, never read. When no stack
runs, the reader opens the directory itself. A server DSN is used directly.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from llmops.config import Settings
from llmops.errors import UserError, clickhouse_code, clickhouse_message
from llmops.stack_state import STORE_ID_HEADER, running_stack, store_id
from sinks.clickhouse.client import connect

__all__ = [
    "open_reader",
    "close_reader",
    "find_endpoint",
    "require_store",
    "endpoint_alive",
    "local_host",
    "served_store",
    "store_dir",
]

_UNKNOWN_DATABASE = 81


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


def store_dir(settings: Settings) -> Path:
    """The embedded store's directory under the data dir."""
    return (settings.data_dir / "clickhouse").resolve()


def served_store(host: str, port: int, timeout_s: float = 5.0, *, tls_ca: Path | None = None) -> str | None:
    """The store id the SQL endpoint at host:port announces on /ping (llmops.stack_state.store_id), None if none."""
    context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca is not None else None
    scheme = "https" if tls_ca is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{port}/ping", timeout=timeout_s, context=context) as response:
            return response.headers.get(STORE_ID_HEADER)
    except OSError:
        return None


def _endpoint_client(settings: Settings, host: str, port: int) -> Client:
    sql = settings.sql
    credentials: dict[str, Any] = (
        {"username": sql.user, "password": sql.password.get_secret_value()} if sql.password is not None else {}
    )
    tls: dict[str, Any] = (
        {"interface": "https", "ca_cert": str(sql.tls_cert_file)} if sql.tls_cert_file is not None else {}
    )
    return clickhouse_connect.get_client(
        host=host,
        port=port,
        database=settings.clickhouse.database,
        compress=False,
        autogenerate_session_id=False,
        **credentials,
        **tls,
    )


def find_endpoint(settings: Settings) -> tuple[str, int] | None:
    """Where the SQL endpoint serving the data dir's embedded store listens, None when none does.

    UserError when the data dir's stack runs but its port answers for another store (or not at all)."""
    expected = store_id(store_dir(settings))
    tls_ca = settings.sql.tls_cert_file
    stack = running_stack(settings.data_dir)
    if stack is not None and stack.sql_port:
        if not endpoint_alive(stack.host, stack.sql_port, tls_ca=tls_ca):
            raise UserError(
                f"the stack of data dir {settings.data_dir} (pid {stack.pid}) does not answer on its SQL port "
                f"{stack.host}:{stack.sql_port}: wait for `llmops up` to finish starting, or restart it"
            )
        if served_store(stack.host, stack.sql_port, tls_ca=tls_ca) != expected:
            raise UserError(
                f"the SQL endpoint on {stack.host}:{stack.sql_port} serves another store than "
                f"data dir {settings.data_dir}: another llmops took the port; stop it and restart `llmops up`"
            )
        return stack.host, stack.sql_port
    host = local_host(settings.receiver.listen)
    if served_store(host, settings.sql.port, tls_ca=tls_ca) == expected:
        # A worker started on its own (`llmops worker`) writes no stack file: its endpoint is used
        # if it serves this store.
        return host, settings.sql.port
    return None


def require_store(settings: Settings) -> Path:
    """The embedded store's directory, or UserError when it was never created (nothing is created here)."""
    expected = store_dir(settings)
    if not expected.is_dir():
        raise UserError(f"no data in {settings.data_dir} yet: start `llmops up` (or pass the --data-dir it uses)")
    return expected


def close_reader(client: Client) -> None:
    """Close a reader. clickhouse-connect 1.12 fails to close an HTTPS pool (urllib3-future's TrafficPolice
    has no `lock`); its sockets then close with the process, which is all a reader needs."""
    try:
        client.close()
    except AttributeError:
        pass


def open_reader(settings: Settings) -> Client:
    """A read-only client on the store of `settings.data_dir` (or the configured server);
    UserError when there is none."""
    if not settings.embedded_store:
        return connect(settings.clickhouse_dsn, settings.clickhouse.database)
    endpoint = find_endpoint(settings)
    if endpoint is not None:
        return _endpoint_client(settings, *endpoint)
    expected = require_store(settings)
    try:
        client = connect(settings.clickhouse_dsn, settings.clickhouse.database, readonly=True)
    except Exception as exc:
        if clickhouse_code(exc) == _UNKNOWN_DATABASE:
            raise UserError(
                f"no data in {settings.data_dir} yet: start `llmops up` (or pass the --data-dir it uses)"
            ) from exc
        raise UserError(
            f"cannot open the store in {expected}: {clickhouse_message(exc)} "
            f"(is another process using data dir {settings.data_dir}?)"
        ) from exc
    return client
