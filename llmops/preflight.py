"""What `llmops up` checks before it prints its banner or starts a child.

A child that fails at start-up can only say "I exited"; these checks name the
cause and the fix on one line instead (llmops.errors.UserError): a port in use
(which one, what it is for, the flag that moves it), a data dir another llmops
holds (its pid), a data dir the user cannot write, a pricing or budgets file
that does not parse.
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
from pathlib import Path

from llmops.config import Settings
from llmops.errors import UsageError, UserError, file_problem
from llmops.stack_state import DataDirLock

__all__ = [
    "check_ports",
    "check_data_dir",
    "check_input_files",
    "check_pricing_file",
    "check_budgets_file",
    "preflight",
]


def _ports(settings: Settings) -> list[tuple[int, str, str]]:
    ports = [
        (settings.receiver.http_port, "OTLP HTTP", "--otlp-http-port"),
        (settings.receiver.grpc_port, "OTLP gRPC", "--otlp-grpc-port"),
    ]
    if settings.embedded_store and settings.sql.enabled:
        ports.append((settings.sql.port, "SQL endpoint", "--sql-port"))
    return ports


def check_ports(settings: Settings) -> None:
    """Bind each configured port the way its server will (SO_REUSEADDR, so a port in TIME_WAIT is not 'in use')."""
    host = settings.receiver.listen
    for port, role, flag in _ports(settings):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UserError(f"port {port} ({role}) is in use: stop the other process or pass {flag}") from exc
                raise UserError(
                    f"cannot listen on {host}:{port} ({role}): {exc.strerror}; check --listen or pass {flag}"
                ) from exc


def check_data_dir(settings: Settings) -> DataDirLock:
    """Create the data dir, make sure the user can write it, and lock it for this stack (the caller releases)."""
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(_not_writable(data_dir, exc)) from exc
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise UserError(
            f"data dir {data_dir} is not writable by user {getpass.getuser()} (needs write and execute permission): "
            f"fix its permissions or pass another --data-dir"
        )
    try:
        lock = DataDirLock(data_dir).acquire()
    except PermissionError as exc:
        raise UserError(_not_writable(data_dir, exc)) from exc
    store = data_dir / "clickhouse"
    if store.exists() and not os.access(store, os.W_OK | os.X_OK):
        lock.release()
        raise UserError(
            f"store directory {store} is not writable by user {getpass.getuser()}: "
            "fix its permissions or pass another --data-dir"
        )
    return lock


def _not_writable(data_dir: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != data_dir else ""
    return (
        f"cannot create or write data dir {data_dir}{where}: {reason} for user {getpass.getuser()}: "
        "fix its permissions or pass another --data-dir"
    )


def check_pricing_file(settings: Settings) -> None:
    """Parse the user's pricing file, so a typo is `file:line: problem` here, not a worker crash after the banner."""
    pricing_file = settings.processor.pricing_file
    if pricing_file is None:
        return
    from processors.core.pricing import PricingCatalog, PricingError

    try:
        PricingCatalog.load([pricing_file])
    except PricingError as exc:
        raise UsageError(file_problem(exc, pricing_file)) from exc


def check_budgets_file(settings: Settings) -> None:
    budgets_file = settings.processor.budgets_file
    if budgets_file is None:
        return
    from processors.core.budgets import load_budgets

    try:
        load_budgets(budgets_file)
    except (OSError, ValueError) as exc:
        raise UsageError(file_problem(exc, budgets_file)) from exc


def check_input_files(settings: Settings) -> None:
    """The pricing and budgets files `up` hands to its worker."""
    check_pricing_file(settings)
    check_budgets_file(settings)


def preflight(settings: Settings) -> DataDirLock:
    """All checks, cheapest first; returns the data dir lock the stack holds until it exits."""
    check_input_files(settings)
    lock = check_data_dir(settings)  # first: a second `up` on the same data dir is about the data dir, not its ports
    try:
        check_ports(settings)
    except UserError:
        lock.release()
        raise
    return lock
