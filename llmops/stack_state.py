"""What a running `llmops up` owns, written into its data dir so other commands find that stack.

`up` takes an exclusive lock on `<data dir>/llmops.lock` (holding its pid),
so two stacks never share a data dir, and writes `<data dir>/stack.json`
(ports, broker, store, budgets and pricing files, pid) once its parts are
ready; it removes the file on exit. `report`, `sql`, `budgets`, `drift pin`
and `pricing unpriced` read the file instead of guessing ports, and check that
the SQL endpoint they reach serves that data dir's store (see llmops.store).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from llmops.config import Settings
from llmops.errors import UserError

__all__ = [
    "StackState",
    "DataDirLock",
    "publish",
    "store_id",
    "STORE_ID_HEADER",
    "write_state",
    "remove_state",
    "running_stack",
    "STATE_FILE",
    "LOCK_FILE",
]

STATE_FILE = "stack.json"
LOCK_FILE = "llmops.lock"
# The SQL endpoint's /ping answers which store it serves with this header: a digest of the store's
# real path, so a reader can tell its own stack from another one on the same port without the
# endpoint disclosing a file system path.
STORE_ID_HEADER = "X-Llmops-Store-Id"


def store_id(store_dir: Path | str) -> str:
    """The identity of an embedded store: a digest of its directory's real path."""
    return hashlib.sha256(os.path.realpath(store_dir).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StackState:
    pid: int
    data_dir: str  # absolute
    store: str  # the ClickHouse DSN the workers write to
    database: str
    kafka: str  # bootstrap servers the stack's parts use
    host: str  # where local clients reach the listeners
    otlp_grpc_port: int
    otlp_http_port: int
    sql_port: int | None  # None when the store is a ClickHouse server (no embedded endpoint)
    drift_topic: str
    budgets_file: str | None = None
    pricing_file: str | None = None


def publish(settings: Settings, bootstrap: str, host: str) -> Path:
    """Write the running stack's file from its settings (called by `up` once its parts are ready)."""
    processor = settings.processor
    embedded_sql = settings.embedded_store and settings.sql.enabled
    return write_state(
        settings.data_dir,
        StackState(
            pid=os.getpid(),
            data_dir=str(settings.data_dir.resolve()),
            store=_without_password(settings.clickhouse_dsn),
            database=settings.clickhouse.database,
            kafka=bootstrap,
            host=host,
            otlp_grpc_port=settings.receiver.grpc_port,
            otlp_http_port=settings.receiver.http_port,
            sql_port=settings.sql.port if embedded_sql else None,
            drift_topic=settings.kafka.drift_topic,
            budgets_file=str(processor.budgets_file.resolve()) if processor.budgets_file else None,
            pricing_file=str(processor.pricing_file.resolve()) if processor.pricing_file else None,
        ),
    )


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def write_state(data_dir: Path, state: StackState) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_state(data_dir: Path, pid: int) -> None:
    """Remove the file if it is still ours (a later stack may have replaced it)."""
    path = data_dir / STATE_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def running_stack(data_dir: Path) -> StackState | None:
    """The stack running on `data_dir`, or None (no file, unreadable file, or its process is gone)."""
    path = data_dir / STATE_FILE
    try:
        state = StackState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


class DataDirLock:
    """An exclusive flock on `<data dir>/llmops.lock`, released when the process ends, however it ends."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        path = self.data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"data dir {self.data_dir} is in use by another llmops (pid {holder}): "
                "stop it, or pass another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
