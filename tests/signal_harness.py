"""An in-memory harness for per-window signals: records of calls (and evaluations) in, stored rows out, no broker,
no ClickHouse.

In the spirit of Bytewax's TestingSource/TestingSink: `run` feeds batches of records through the
worker's own row step (`processors.core.pipeline.build_tables`, which applies the signal contract),
and `MemorySink` plays the table: it keeps the rows and answers the fence a batch reads
(max `_ingest_offset` per source), as the ClickHouse sink does. Feeding a batch again is a
replay after a crash. `merged` combines stored rows per key by each column's declared merge,
as the table engine or a reader's GROUP BY would.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processors.core.evaluations import Evaluation
from processors.core.pipeline import CallStages, DecodedRecord, SourceRecord, build_tables
from processors.core.records import LLMCall
from processors.core.signal import Signal, TableSpec
from processors.core.tables import TableRows

__all__ = ["MemorySink", "Record", "merged", "rows_of", "run"]

_DELIVERY = ("_ingest_source", "_ingest_offset")


@dataclass(frozen=True)
class Record:
    """One Kafka record's calls and evaluation results; `source` is '<topic id>/<partition>'."""

    source: str
    offset: int
    calls: Sequence[LLMCall]
    evaluations: Sequence[Evaluation] = ()


class MemorySink:
    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def fences(self, table: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows[table]:
            source = row["_ingest_source"]
            out[source] = max(out.get(source, -1), row["_ingest_offset"])
        return out

    def write(self, rows: TableRows) -> None:
        self.rows[rows.table].extend(rows_of(rows))


def rows_of(rows: TableRows) -> list[dict[str, Any]]:
    return [dict(zip(rows.column_names, values, strict=True)) for values in zip(*rows.columns, strict=True)]


def run(signals: Sequence[Signal[Any]], batches: Iterable[Sequence[Record]],
        sink: MemorySink | None = None) -> MemorySink:  # fmt: skip
    """Each batch as the worker handles it: read fences, build the signals' rows, store them."""
    sink = sink if sink is not None else MemorySink()
    stages = CallStages(signals=tuple(signals))
    for batch in batches:
        decoded = []
        for r in batch:
            record = SourceRecord("spans", int(r.source.rsplit("/", 1)[-1]), r.offset, b"", r.source)
            decoded.append(DecodedRecord(record, 0, list(r.calls), [], evaluations=list(r.evaluations)))
        tables = [signal.table.name for signal in stages.signals]
        fences = {table: sink.fences(table) for table in tables}
        for rows in build_tables(decoded, fences, stages, now_ms=0, tables=tables):
            assert isinstance(rows, TableRows)
            sink.write(rows)
    return sink


def _min(a: Any, b: Any) -> Any:
    return b if _nan(a) else a if _nan(b) else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if _nan(a) else a if _nan(b) else max(a, b)


def _nan(value: Any) -> bool:
    """No value: NaN (a float column) or None (a Nullable one)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def merged(spec: TableSpec, rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows combined per key by each column's merge rule; "partial" columns and the delivery columns are dropped."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[name] for name in spec.key)
        into = out.get(key)
        if into is None:
            out[key] = {c.name: dict(row[c.name]) if c.merge == "sum_map" else row[c.name]
                        for c in spec.columns if c.merge not in ("key", "partial")}  # fmt: skip
            continue
        for column in spec.columns:
            name, value = column.name, row[column.name]
            if column.merge == "sum":
                into[name] += value
            elif column.merge == "min":
                into[name] = _min(into[name], value)
            elif column.merge == "max":
                into[name] = _max(into[name], value)
            elif column.merge == "sum_map":
                for bucket, count in value.items():
                    into[name][bucket] = into[name].get(bucket, 0) + count
            elif column.merge == "any":
                assert into[name] == value, (spec.name, name, into[name], value)
    assert all(name not in spec.column_names for name in _DELIVERY)
    return out
