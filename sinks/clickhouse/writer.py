"""The ClickHouse sink: exactly-once inserts of TableRows.

Rows go through one reusable clickhouse-connect insert context per table (its
documented way to insert repeatedly into one table). A fresh context per insert
costs a DESCRIBE and leaves a reference cycle holding the inserted columns,
which under the worker's GC thresholds piled up (BENCHMARKS.md); a reused one
holds at most its table's last columns. The contexts declare LowCardinality
columns as their plain type: clickhouse-connect builds LowCardinality
dictionaries in pure Python (about half of an llm_calls insert's CPU), while
ClickHouse converts a plain Native column on insert itself.

Two guards make a write idempotent:
- fences: every row carries (_ingest_source, _ingest_offset); after a restart
  or rebalance the sink reads max(_ingest_offset) per source and table, and the
  caller drops records at or below it (they are already stored);
- insert_deduplication_token: a retried insert whose first attempt did land is
  dropped by ClickHouse itself (non_replicated_deduplication_window, or the
  replicated dedup log on a cluster).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.insert import InsertContext
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from processors.core.errors import RetryableError
from processors.core.tables import OtlpRecords, TableRows
from sinks.clickhouse.errors import ErrorClass, FatalSinkError, PermanentSinkError, SinkError, classify
from sinks.clickhouse.otlp_ingest import INGEST_TABLE, frame_records, insert_settings

__all__ = ["ClickHouseSink", "TransientSinkError"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None  # set before every sleep
    log.warning("clickhouse call failed, retrying", extra={"attempt": state.attempt_number, "error": str(error)[:300]})


class TransientSinkError(SinkError, RetryableError):
    """Retries ran out on an error that might pass; stop without acknowledging."""


class ClickHouseSink:
    def __init__(self, client: Client, database: str, *, retries: int = 8, max_backoff_s: float = 30.0) -> None:
        self._client = client
        self._database = database
        self._retries = retries
        self._max_backoff_s = max_backoff_s
        self._fences: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._contexts: dict[tuple[str, tuple[str, ...]], tuple[InsertContext, threading.Lock]] = {}
        self.rows_written: dict[str, int] = {}

    # -- fences ---------------------------------------------------------
    def forget_fences(self) -> None:
        """Call on partition assignment: another worker may have written since."""
        with self._lock:
            self._fences.clear()

    def fences(self, table: str, sources: Iterable[str]) -> dict[str, int]:
        """Highest stored offset per source for `table` (-1 when nothing is stored)."""
        wanted = set(sources)
        with self._lock:
            missing = [s for s in wanted if (table, s) not in self._fences]
        if missing:
            found = dict.fromkeys(missing, -1)
            result = self._retrying(
                lambda: self._client.query(
                    f"SELECT _ingest_source, max(_ingest_offset) FROM `{self._database}`.`{table}` "
                    "WHERE _ingest_source IN {sources:Array(String)} GROUP BY _ingest_source",
                    parameters={"sources": missing},
                )
            )
            for source, offset in result.result_rows:
                found[source] = int(offset)
            with self._lock:
                for source, offset in found.items():
                    self._fences[(table, source)] = offset
        with self._lock:
            return {s: self._fences[(table, s)] for s in wanted}

    def _advance(self, rows: TableRows | OtlpRecords) -> None:
        if isinstance(rows, OtlpRecords):
            sources, offsets = rows.sources, rows.offsets
        elif "_ingest_source" in rows.column_names and len(rows):
            sources, offsets = rows.column("_ingest_source"), rows.column("_ingest_offset")
        else:
            return
        with self._lock:
            for source, offset in zip(sources, offsets, strict=True):
                key = (rows.table, source)
                if offset > self._fences.get(key, -1):
                    self._fences[key] = offset

    # -- writes ---------------------------------------------------------
    def write(self, rows: TableRows | OtlpRecords, token: str) -> None:
        """Insert all rows in one block, or raise Permanent/Fatal/TransientSinkError."""
        if isinstance(rows, OtlpRecords):
            self._write_otlp(rows, token)
            return
        if not len(rows):
            return
        context, context_lock = self._insert_context(rows.table, tuple(rows.column_names))

        def insert() -> None:
            context.settings["insert_deduplication_token"] = token
            context.data = rows.columns
            try:
                self._client.data_insert(context)
            finally:
                context.data = None

        with context_lock:
            self._retrying(insert)
        self._advance(rows)
        self.rows_written[rows.table] = self.rows_written.get(rows.table, 0) + len(rows)

    def _insert_context(self, table: str, column_names: tuple[str, ...]) -> tuple[InsertContext, threading.Lock]:
        """The table's reusable insert context (and the lock that serialises its use)."""
        key = (table, column_names)
        with self._lock:
            found = self._contexts.get(key)
        if found is not None:
            return found
        described = self._retrying(
            lambda: self._client.create_insert_context(
                f"`{self._database}`.`{table}`",
                list(column_names),
                column_oriented=True,
                # Tables are partitioned by event time: a batch of calls spread over more than 100
                # months must still be stored (refusing it would retry until the worker gives up).
                settings={"throw_on_max_partitions_per_insert_block": 0},
            )
        )
        described.column_types = [_without_low_cardinality(t) for t in described.column_types]
        with self._lock:
            return self._contexts.setdefault(key, (described, threading.Lock()))

    def _write_otlp(self, records: OtlpRecords, token: str) -> None:
        """One Protobuf insert into otlp_ingest; its materialized view writes `records.table`."""
        if not records.values:
            return
        data = frame_records(records.values, records.sources, records.offsets)
        settings = {**insert_settings(), "insert_deduplication_token": token}
        self._retrying(
            lambda: self._client.raw_insert(
                f"`{self._database}`.`{INGEST_TABLE}`", None, data, settings=settings, fmt="Protobuf"
            )
        )
        self._advance(records)
        self.rows_written[records.table] = self.rows_written.get(records.table, 0) + len(records)

    def _retrying(self, call: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: classify(exc) == ErrorClass.TRANSIENT),
            stop=stop_after_attempt(self._retries + 1),
            wait=wait_exponential_jitter(initial=0.2, max=self._max_backoff_s),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            return retrying(call)
        except SinkError:
            raise
        except Exception as exc:  # classified below; nothing is swallowed
            kind = classify(exc)
            if kind == ErrorClass.PERMANENT:
                raise PermanentSinkError(str(exc)[:2000]) from exc
            if kind == ErrorClass.FATAL:
                raise FatalSinkError(str(exc)[:2000]) from exc
            raise TransientSinkError(str(exc)[:2000]) from exc


def _without_low_cardinality(column_type: ClickHouseType) -> ClickHouseType:
    """LowCardinality(T) -> T, recursively through Array/Map/Tuple: ClickHouse converts on insert."""
    name = column_type.name
    if "LowCardinality(" not in name:
        return column_type
    return get_from_name(re.sub(r"LowCardinality\((.*?)\)(?=[,)]|$)", r"\1", name))
