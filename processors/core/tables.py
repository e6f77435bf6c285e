"""What the core hands the sink: a columnar batch of rows per table, or raw OTLP records for otel_traces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TableRows", "OtlpRecords"]


@dataclass(slots=True)
class TableRows:
    """Columns in `column_names` order; all columns have the same length."""

    table: str
    column_names: list[str]
    columns: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = [[] for _ in self.column_names]
        if len(self.columns) != len(self.column_names):
            raise ValueError(f"{self.table}: {len(self.columns)} columns for {len(self.column_names)} names")

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    def extend(self, other: TableRows) -> None:
        if other.column_names != self.column_names:
            raise ValueError(f"{self.table}: column mismatch")
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            mine.extend(theirs)

    def column(self, name: str) -> list[Any]:
        return self.columns[self.column_names.index(name)]

    def select(self, keep: list[int]) -> TableRows:
        """A copy holding only the rows at the given indexes."""
        return TableRows(self.table, list(self.column_names), [[col[i] for i in keep] for col in self.columns])

    def token(self) -> str:
        """An insert deduplication token from the rows' content: same rows, same token, so a retried
        insert is not stored twice."""
        digest = hashlib.blake2b(digest_size=16)
        for column in self.columns:
            digest.update(repr(column).encode())
        return f"{self.table}:{digest.hexdigest()}"


@dataclass(slots=True)
class OtlpRecords:
    """Kafka records bound for `table`, which ClickHouse fills from their raw OTLP bytes
    (sinks/clickhouse/otlp_ingest.py)."""

    table: str
    values: list[bytes] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    spans: int = 0  # spans in the records, for the sink's row counts (the view drops the few invalid ones)

    def __len__(self) -> int:
        return self.spans

    def append(self, value: bytes, source: str, offset: int, spans: int) -> None:
        self.values.append(value)
        self.sources.append(source)
        self.offsets.append(offset)
        self.spans += spans
