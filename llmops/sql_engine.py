"""Run checked read queries on the embedded chDB store: limits fixed per handle, a bounded wait.

The endpoint owns a few chDB connection handles of its own (chDB serves any
number of handles on the one engine of a process, and runs them in
parallel). Each handle is set up once: the time, result-size and memory
limits, Python table functions off, then `readonly=1`, after which no query
on it can change a setting (a SETTINGS clause or SET fails in the engine). A
query takes a free handle, is checked by the QueryGuard on that handle's
parser and, if allowed, its canonical text runs there alone: one statement
per call, and a handle a query failed on is replaced (chDB would hand that
query's partial output to the next one), so one request's result can never
be another's.

A request may ask for tighter limits (the URL settings `max_execution_time`,
`max_result_rows`, `max_result_bytes`, `max_memory_usage`, as clickhouse-go
sends its context deadline): a `readonly=1` handle cannot change a setting,
so such a query still takes a slot, but runs on a fresh handle set up the
same way with the smaller limits (`QueryLimits.tightened`), closed after it.

When every handle is busy a request waits, but only `max_queued_queries`
may wait and only for `queue_timeout_s`; past that it is refused at once
(`EngineBusy`, the endpoint's 503), so one slow query delays the others at
most by the time limit the engine enforces on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import chdb

from llmops.sql_guard import CheckedQuery, QueryGuard
from processors.core.errors import RetryableError

__all__ = ["EngineBusy", "LIMIT_SETTINGS", "QueryLimits", "SqlEngine", "engine_path"]

# URL settings a request may send to lower a limit, and the QueryLimits field each lowers.
LIMIT_SETTINGS = {
    "max_execution_time": "max_execution_time_s",
    "max_result_rows": "max_result_rows",
    "max_result_bytes": "max_result_bytes",
    "max_memory_usage": "max_memory_usage",
}


log = logging.getLogger(__name__)


class EngineBusy(RetryableError):
    """Every handle is busy and the wait queue is full, or the wait timed out."""


@dataclass(frozen=True)
class QueryLimits:
    max_execution_time_s: float = 30.0
    max_result_rows: int = 1_000_000
    max_result_bytes: int = 64 * 1024 * 1024
    max_memory_usage: int = 512 * 1024 * 1024

    def engine_settings(self) -> dict[str, str]:
        return {
            "max_execution_time": repr(float(self.max_execution_time_s)),
            "timeout_overflow_mode": "throw",
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "result_overflow_mode": "throw",
            "max_memory_usage": str(self.max_memory_usage),
            "allow_python_table_function": "0",
            "allow_introspection_functions": "0",
            # A URL read retries with backoff for ~30 s, past max_execution_time; one try if one ever got through.
            "http_max_tries": "1",
        }

    def tightened(self, requested: Mapping[str, float]) -> QueryLimits:
        """These limits, lowered where `requested` (setting name -> positive value) asks for less; never raised.
        Whole-number settings are rounded down, so a fraction cannot round up past what was asked."""
        changes: dict[str, float | int] = {}
        for name, value in requested.items():
            field = LIMIT_SETTINGS[name]
            cap = getattr(self, field)
            wanted = float(value) if field == "max_execution_time_s" else max(1, int(value))
            if wanted < cap:
                changes[field] = wanted
        return replace(self, **changes) if changes else self  # type: ignore[arg-type]


def engine_path(dsn: str) -> str:
    """The chDB location of a `chdb://` DSN, spelled as clickhouse-connect spells it (chDB compares paths literally)."""
    path = dsn[len("chdb://") :].split("?", 1)[0]
    return os.path.realpath(path) if path not in ("", "memory", ":memory:") else ":memory:"


class SqlEngine:
    def __init__(
        self,
        path: str,
        database: str,
        limits: QueryLimits,
        *,
        max_concurrent_queries: int = 2,
        max_queued_queries: int = 8,
        queue_timeout_s: float = 5.0,
    ) -> None:
        self._path = path
        self._database = database
        self._limits = limits
        self._size = max_concurrent_queries
        self._max_queued = max_queued_queries
        self._queue_timeout_s = queue_timeout_s
        self._handles: list[Any] = []
        self._free: asyncio.Queue[Any] | None = None
        self._waiting = 0
        self._threads: ThreadPoolExecutor | None = None
        self.guard: QueryGuard | None = None

    def _connect(self, limits: QueryLimits) -> Any:
        handle = chdb.connect(self._path)
        try:
            for name, value in limits.engine_settings().items():
                handle.query(f"SET {name} = '{value}'", "TSV")
            handle.query(f"USE `{self._database}`", "TSV")
            handle.query("SET readonly = 1", "TSV")  # last: from here on nothing on this handle changes a setting
        except Exception:
            handle.close()
            raise
        return handle

    def open(self) -> None:
        for _ in range(self._size):
            self._handles.append(self._connect(self._limits))
        formats = (
            self._handles[0].query("SELECT name FROM system.formats WHERE is_output", "TSVRaw").bytes().decode().split()
        )
        self.guard = QueryGuard(self._database, formats)
        self._threads = ThreadPoolExecutor(self._size, thread_name_prefix="sql-endpoint")

    @property
    def limits(self) -> QueryLimits:
        return self._limits

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None
        for handle in self._handles:
            try:
                handle.close()
            except Exception:  # a handle that failed to open fully still gets the others closed
                pass
        self._handles.clear()

    # -- one query ----------------------------------------------------------------

    def run(self, handle: Any, sql: str, default_format: str, parameters: Mapping[str, str]) -> tuple[bytes, str]:
        """Check `sql` on `handle` and run its canonical text there. Blocking; raises QueryRefused
        or the engine's error."""
        assert self.guard is not None, "open() first"
        checked: CheckedQuery = self.guard.check(
            sql, lambda text, params: handle.query(text, "TSVRaw", params=dict(params)).bytes()
        )
        fmt = checked.format or default_format
        result = handle.query(checked.sql, fmt, params=dict(parameters) or None)
        return result.bytes() or b"", fmt

    def run_now(self, sql: str, default_format: str, parameters: Mapping[str, str] | None = None) -> tuple[bytes, str]:
        """One query on the first handle, for a caller with no event loop (`llmops sql` without a running worker)."""
        try:
            return self.run(self._handles[0], sql, default_format, parameters or {})
        except BaseException:
            self._renew(self._handles[0])
            raise

    def run_limited(
        self, limits: QueryLimits, sql: str, default_format: str, parameters: Mapping[str, str]
    ) -> tuple[bytes, str]:
        """`run` on a fresh handle set up with `limits` (tighter than this engine's), closed afterwards. Blocking."""
        handle = self._connect(limits)
        try:
            return self.run(handle, sql, default_format, parameters)
        finally:
            handle.close()

    async def execute(
        self, sql: str, default_format: str, parameters: Mapping[str, str], limits: QueryLimits | None = None
    ) -> tuple[bytes, str]:
        """Run `sql` in a slot; `limits` (from `self.limits.tightened`) other than the engine's own
        run it on a fresh handle."""
        slot = [await self._acquire()]
        free = self._free
        assert free is not None and self._threads is not None
        loop = asyncio.get_running_loop()
        if limits is None or limits == self._limits:
            running = loop.run_in_executor(self._threads, self._run_in_slot, slot, sql, default_format, parameters)
        else:  # the slot's handle stays idle meanwhile: the number of queries running is bounded all the same
            running = loop.run_in_executor(self._threads, self.run_limited, limits, sql, default_format, parameters)
        # The slot is free again when the engine is done with it, even if this request is cancelled first.
        running.add_done_callback(lambda _: free.put_nowait(slot[0]))
        return await asyncio.shield(running)

    def _run_in_slot(
        self, slot: list[Any], sql: str, default_format: str, parameters: Mapping[str, str]
    ) -> tuple[bytes, str]:
        try:
            return self.run(slot[0], sql, default_format, parameters)
        except BaseException:
            slot[0] = self._renew(slot[0])
            raise

    def _renew(self, handle: Any) -> Any:
        """A fresh handle for one a query failed on. chDB keeps the partial output of a failed query in
        its connection and hands it out at the start of the next result on that connection (seen with
        chDB 4.4: `SELECT 'x' UNION ALL SELECT toString(throwIf(1))`, then `SELECT 1` answered `x\n1`),
        so a handle that saw a failure never serves another request."""
        try:
            fresh = self._connect(self._limits)
        except Exception:  # noqa: BLE001 - keep the slot rather than lose it; the next failure tries again
            log.warning("could not open a fresh chDB handle after a failed query; reusing the old one", exc_info=True)
            return handle
        try:
            handle.close()
        except Exception:  # noqa: BLE001 - the old handle is dropped either way
            pass
        self._handles = [fresh if h is handle else h for h in self._handles]
        return fresh

    async def _acquire(self) -> Any:
        if self._free is None:  # bound to the running loop on first use
            self._free = asyncio.Queue()
            for handle in self._handles:
                self._free.put_nowait(handle)
        if not self._free.empty():
            return self._free.get_nowait()
        if self._waiting >= self._max_queued:
            raise EngineBusy(f"{self._size} queries running and {self._waiting} waiting")
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._free.get(), self._queue_timeout_s)
        except TimeoutError:
            raise EngineBusy(f"no query slot freed within {self._queue_timeout_s:g} s") from None
        finally:
            self._waiting -= 1
