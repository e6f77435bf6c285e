"""A batch's CPU work as one function: records and fences in, rows and drift records out.

Everything between Kafka and the sink that is pure Python (decoding LLM spans,
normalising, pricing, building rows and drift records) happens here, so the
handler only sequences I/O. Its one piece of state is the drift sender's memory
of what it already sent (processors/core/drift/wire.py). Running it in a spawned child
process was measured (benchmarks/results, BENCHMARKS.md) and gave no gain on 2
cores: the child's pickling and the extra process ate what the second core offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from processors.core.agents.wire import encode_run_spans
from processors.core.drift.wire import DriftSender
from processors.core.pipeline import (
    CallStages,
    DecodedRecord,
    ParsedRecord,
    Poison,
    SourceRecord,
    build_tables,
    decode_parsed_record,
    parse_record_once,
)
from processors.core.tables import TableRows

__all__ = ["PreparedBatch", "prepare_batch", "prepare_records"]

Fences = Mapping[str, Mapping[str, int]]


@dataclass(slots=True)
class PreparedBatch:
    """What one batch writes besides otel_traces, ready for the sink."""

    # Each record's calls and problems (not its spans): what a table's rows are rebuilt from for
    # some of the records when ClickHouse refuses an insert, without parsing them again.
    decoded: list[DecodedRecord]
    tables: list[TableRows]
    drift: list[tuple[str, bytes]]  # (service, record) for the drift topic
    agent_spans: list[tuple[int, bytes]]  # (partition, record) for the agent-span topic
    spans: int
    calls: int
    skipped_records: int  # already stored in every table (redelivery)


def prepare_batch(
    parsed: Iterable[ParsedRecord], fences: Fences, stages: CallStages, drift_sender: DriftSender | None
) -> PreparedBatch:
    """Decode parsed records into the rows of every table but otel_traces, and drift records.

    Record by record: a record's spans (attribute dicts, answer texts) are dropped once its calls
    are built and its drift items encoded, so the batch keeps only calls and problems.
    """
    llm_fence = fences.get("llm_calls", {})
    decoded = []
    run_spans = []
    for item in parsed:
        record = decode_parsed_record(item, stages)
        item.release()
        # Records whose llm_calls rows are not stored yet: the drift and agent-run stages see each call
        # at least once (the agent-run stage counts a span once however often it arrives).
        if record.record.offset > llm_fence.get(record.record.source, -1):
            if drift_sender is not None:
                drift_sender.add(record.calls, record.call_spans)
            run_spans.extend(record.run_spans)
        record.call_spans = []
        record.run_spans = []
        decoded.append(record)
    drift = drift_sender.take() if drift_sender is not None else []
    skipped = sum(
        1 for d in decoded if all(d.record.offset <= fences.get(t, {}).get(d.record.source, -1) for t in stages.tables)
    )
    # otel_traces is not built here: ClickHouse builds it from the raw records (pipeline.traces_batch).
    row_tables = [table for table in stages.tables if table != "otel_traces"]
    rows = [r for r in build_tables(decoded, fences, stages, tables=row_tables) if isinstance(r, TableRows)]
    return PreparedBatch(
        decoded,
        rows,
        drift,
        encode_run_spans(run_spans, stages.agent_partitions) if run_spans else [],
        sum(d.span_count for d in decoded),
        sum(len(d.calls) for d in decoded),
        skipped,
    )


def prepare_records(records: Sequence[SourceRecord], fences: Fences, stages: CallStages,
                    drift_sender: DriftSender | None) -> tuple[list[Poison], PreparedBatch]:  # fmt: skip
    """`prepare_batch` on records, each parsed just before it is decoded: a batch holds one record's
    parsed message and spans at a time. Returns the poison records too."""
    poison: list[Poison] = []

    def parsed() -> Iterator[ParsedRecord]:
        for record in records:
            item = parse_record_once(record)
            if isinstance(item, Poison):
                poison.append(item)
            else:
                yield item

    prepared = prepare_batch(parsed(), fences, stages, drift_sender)
    return poison, prepared
