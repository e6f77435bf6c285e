"""What the agent does with one batch of Kafka records, in two steps:

1. `prepare`: read fences -> processors/core/prepare.py parses each record once and turns
   its LLM spans into rows and drift records (Python, holds the GIL) -> dead-letter poison.
2. `write`: insert otel_traces from the raw bytes (ClickHouse flattens them)
   while publishing drift and agent-span records and inserting the other tables.

The agent runs one batch's `write` while it prepares the next, and acknowledges
a batch only after its `write` returned, so offsets are committed only after
ClickHouse holds every row (or the record went to the dead-letter topic).
Writes stay in batch order: a batch's rows never land before an earlier
batch's, so a fence (highest stored offset) never passes a batch that is not
stored. A row set ClickHouse rejects as bad data is bisected down to the
record(s) that cause it; those are dead-lettered, the rest is written. The
bisect rebuilds rows from the batch's decoded records: no record is parsed twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from processors.core.drift.wire import DriftSender
from processors.core.pipeline import (
    CallStages,
    DecodedRecord,
    Poison,
    SourceRecord,
    build_tables,
    poison_rows,
    traces_batch,
)
from processors.core.prepare import PreparedBatch, prepare_records
from processors.core.tables import OtlpRecords, TableRows
from sinks.clickhouse.errors import PermanentSinkError
from sinks.clickhouse.writer import ClickHouseSink

__all__ = ["BatchHandler", "HandlerStats", "DeadLetter", "Publish", "ReadyBatch"]

log = logging.getLogger(__name__)

# Sends one record to the dead-letter topic and returns once Kafka acknowledged it.
DeadLetter = Callable[[Poison], Awaitable[None]]
# Sends keyed records (key, value) to the drift topic and returns once Kafka acknowledged them.
Publish = Callable[[list[tuple[str, bytes]]], Awaitable[None]]
# Sends records (partition, value) to the agent-span topic and returns once Kafka acknowledged them.
PublishToPartitions = Callable[[list[tuple[int, bytes]]], Awaitable[None]]
# Rebuilds a table's batch for some of the batch's records.
Rebuild = Callable[[Sequence[DecodedRecord]], list[TableRows | OtlpRecords]]


@dataclass(slots=True)
class HandlerStats:
    records: int = 0
    spans: int = 0
    calls: int = 0
    dead_lettered: int = 0
    skipped_records: int = 0  # already stored (redelivery after a restart)


@dataclass(slots=True)
class ReadyBatch:
    """A prepared batch waiting for its writes."""

    poison: list[Poison]
    fences: dict[str, dict[str, int]]
    prepared: PreparedBatch


def _token(table: str, records: Sequence[SourceRecord], stage: str = "") -> str:
    """Same records, same token: a retried insert is deduplicated by ClickHouse."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{table}|{stage}".encode())
    for record in sorted(records, key=lambda r: (r.source, r.offset)):
        digest.update(f"|{record.source}:{record.offset}".encode())
    return f"{table}:{digest.hexdigest()}"


class BatchHandler:
    def __init__(
        self,
        sink: ClickHouseSink,
        stages: CallStages,
        dead_letter: DeadLetter,
        drift: tuple[DriftSender, Publish] | None = None,
        agent_spans: PublishToPartitions | None = None,
    ) -> None:
        self._sink = sink
        self._stages = stages
        self._dead_letter = dead_letter
        self._drift_sender: DriftSender | None = drift[0] if drift is not None else None
        self._publish_drift: Publish | None = drift[1] if drift is not None else None
        self._publish_agent_spans = agent_spans
        self.stats = HandlerStats()

    async def handle(self, records: Sequence[SourceRecord]) -> None:
        """Prepare and write one batch."""
        await self.write(await self.prepare(records))

    async def prepare(self, records: Sequence[SourceRecord]) -> ReadyBatch:
        """Parse and decode a batch into rows; poison records go to the dead-letter topic now."""
        sources = {r.source for r in records}
        fences = {table: await asyncio.to_thread(self._sink.fences, table, sources) for table in self._stages.tables}
        poison, prepared = await asyncio.to_thread(prepare_records, records, fences, self._stages, self._drift_sender)
        for item in poison:
            await self._dead_letter(item)
        if poison:
            self.stats.dead_lettered += len(poison)
            log.warning("dead-lettered %d undecodable record(s)", len(poison), extra={"reason": poison[0].reason[:200]})
        return ReadyBatch(poison, fences, prepared)

    async def write(self, batch: ReadyBatch) -> None:
        """Store a prepared batch; returns once every table holds its rows."""
        fences, prepared = batch.fences, batch.prepared
        decoded = prepared.decoded
        # otel_traces needs only the raw bytes: ClickHouse flattens them (C++, GIL released)
        # while the other tables are written.
        traces = asyncio.ensure_future(
            self._insert(
                traces_batch(decoded, fences["otel_traces"]),
                decoded,
                lambda part: [traces_batch(part, fences["otel_traces"])],
            )
        )
        try:
            if self._publish_drift is not None and prepared.drift:
                # Before llm_calls is written, so before the acknowledgement: at least once into the drift stage.
                await self._publish_drift(prepared.drift)
            if self._publish_agent_spans is not None and prepared.agent_spans:
                await self._publish_agent_spans(prepared.agent_spans)  # likewise: at least once into the stage
            for rows in prepared.tables:
                if rows.table == "ingest_errors" and batch.poison:
                    rows.extend(_unstored(poison_rows(batch.poison, int(time.time() * 1000)), fences["ingest_errors"]))
                await self._insert(rows, decoded, partial(self._rebuild, table=rows.table, fences=fences))
        finally:
            await traces
        self.stats.records += len(decoded) + len(batch.poison)
        self.stats.spans += prepared.spans
        self.stats.calls += prepared.calls
        self.stats.skipped_records += prepared.skipped_records

    def _rebuild(
        self, part: Sequence[DecodedRecord], *, table: str, fences: dict[str, dict[str, int]]
    ) -> list[TableRows | OtlpRecords]:
        """Rows of `table` for some of the batch's records: bisecting an insert ClickHouse refused."""
        return build_tables(part, fences, self._stages, tables=(table,))

    async def _insert(self, rows: TableRows | OtlpRecords, items: Sequence[DecodedRecord], rebuild: Rebuild) -> None:
        """Write `rows` (built from `items`); if ClickHouse refuses the data, bisect to the records it refuses."""
        try:
            await asyncio.to_thread(self._sink.write, rows, _token(rows.table, [item.record for item in items]))
        except PermanentSinkError as exc:
            if len(items) <= 1:
                await self._reject_after_sink(items, rows.table, str(exc))
                return
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                for part_rows in rebuild(part):
                    await self._insert(part_rows, part, rebuild)

    async def _reject_after_sink(self, items: Sequence[DecodedRecord], table: str, reason: str) -> None:
        """A record ClickHouse refuses on its own: dead-letter it and say why in ingest_errors."""
        poison = [Poison(item.record, f"{table}: {reason}"[:2000]) for item in items]
        for item in poison:
            await self._dead_letter(item)
        fence = await asyncio.to_thread(self._sink.fences, "ingest_errors", {p.record.source for p in poison})
        rows = _unstored(poison_rows(poison, int(time.time() * 1000), stage="sink"), fence)
        await asyncio.to_thread(self._sink.write, rows, _token("ingest_errors", [p.record for p in poison], "sink"))
        self.stats.dead_lettered += len(poison)
        log.warning(
            "dead-lettered %d record(s) rejected by ClickHouse",
            len(poison),
            extra={"table": table, "reason": reason[:200]},
        )


def _unstored(rows: TableRows, fence: dict[str, int]) -> TableRows:
    sources = rows.column("_ingest_source")
    offsets = rows.column("_ingest_offset")
    return rows.select([i for i, (s, o) in enumerate(zip(sources, offsets, strict=True)) if o > fence.get(s, -1)])
