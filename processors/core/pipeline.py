"""The pure step between Kafka and ClickHouse: records in, table rows out.

`parse_records` parses each Kafka record once and reads from it, in one pass, all
the worker needs (poison records are returned, not raised); `decode_parsed` turns
the LLM spans into LLM calls and reads the evaluation results spans carry. `build_tables` turns what is not yet stored
(offset above the table's fence) into one batch per table, each row tagged
with its source and offset so the sink can guard against double counting.
otel_traces is the exception to row building: its batch is the records' raw
OTLP bytes, which ClickHouse flattens itself (sinks/clickhouse/otlp_ingest.py),
so only spans that may be LLM calls or carry evaluation results become Python objects.
Nothing here does I/O: the agent wires it to Kafka, the sink to ClickHouse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.core.agents.spans import AGENT_MARKER_KEYS, RunSpan, run_span
from processors.core.bounds import MAX_LABEL_CHARS, BadValue
from processors.core.decode import AttributeMarkers, MalformedPayload, SpanProblem, decode_request
from processors.core.evaluations import (
    EVALUATION_EVENT,
    EVALUATION_KEYS,
    EVALUATION_MARKER_KEYS,
    Evaluation,
    evaluations_of,
)
from processors.core.normalize import LLM_MARKER_KEYS, NormalizeOptions, normalize_call
from processors.core.records import LLMCall, SpanView
from processors.core.rows import INGEST_ERRORS_COLUMNS, call_rows, evaluation_rows
from processors.core.signal import Signal, signal_input, signal_rows
from processors.core.tables import OtlpRecords, TableRows

log = logging.getLogger(__name__)

__all__ = [
    "SourceRecord",
    "ParsedRecord",
    "DecodedRecord",
    "Poison",
    "CallStages",
    "parse_record_once",
    "parse_records",
    "decode_parsed",
    "decode_parsed_record",
    "traces_batch",
    "may_be_llm_call",
    "worth_decoding",
    "build_tables",
    "poison_rows",
]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record; `source` names its log ('<topic id>/<partition>') for fences."""

    topic: str
    partition: int
    offset: int
    value: bytes
    source: str


@dataclass(slots=True)
class ParsedRecord:
    """A record whose bytes are an ExportTraceServiceRequest (so ClickHouse may read them too),
    with what its one parse gave: the valid spans' count, the spans the bad-span rule refused,
    and the spans that may be LLM calls. `release` drops those spans once they are decoded."""

    record: SourceRecord
    span_count: int  # valid spans: the rows otel_traces gets from this record
    problems: list[SpanProblem] = field(default_factory=list)
    spans: list[SpanView] = field(default_factory=list)

    def release(self) -> None:
        self.spans = []


@dataclass(slots=True)
class DecodedRecord:
    record: SourceRecord
    span_count: int  # valid spans: the rows otel_traces gets from this record
    calls: list[LLMCall]
    problems: list[SpanProblem]
    call_spans: list[SpanView] = field(default_factory=list)  # call_spans[i] is the span of calls[i]
    run_spans: list[RunSpan] = field(default_factory=list)  # the record's spans with a part in an agent run
    evaluations: list[Evaluation] = field(default_factory=list)  # the results its spans carry (llm_evaluations)


@dataclass(frozen=True, slots=True)
class Poison:
    record: SourceRecord
    reason: str


# A per-call enrichment (TTFT, cost) applied after normalisation.
CallEnricher = Callable[[SpanView, LLMCall], None]


@dataclass(slots=True)
class CallStages:
    """What turns a span into a priced, timed LLM call, and the calls' per-window signals (core/signal.py)."""

    normalize_options: NormalizeOptions = field(default_factory=NormalizeOptions)
    enrichers: list[CallEnricher] = field(default_factory=list)
    signals: Sequence[Signal[Any]] = ()
    # Partitions of the agent-span topic: each record's agent, tool and LLM spans also become RunSpans for it
    # (`agents/wire.py`); 0 when agent runs are off.
    agent_partitions: int = 0

    @property
    def tables(self) -> list[str]:
        """Every table a batch writes (each with its own fence)."""
        return [
            "otel_traces",
            "llm_calls",
            "ingest_errors",
            "llm_evaluations",
            *(signal.table.name for signal in self.signals),
        ]

    def calls_from(
        self, spans: Sequence[SpanView], problems: list[SpanProblem] | None = None
    ) -> tuple[list[LLMCall], list[SpanView]]:
        """The LLM calls among `spans`, with the span each came from.

        A span whose values `normalize_call` refuses (bad token count, time outside the window)
        gives no call but one entry in `problems`; each value a call was stored without (a name
        too long, an unreadable cost or TTFT) gives one entry too.
        """
        calls = []
        sources = []
        options = self.normalize_options
        enrichers = self.enrichers
        for span in spans:
            try:
                call = normalize_call(span, options)
                if call is None:
                    continue
                for enrich in enrichers:
                    enrich(span, call)
            except BadValue as exc:
                if problems is not None:
                    problems.append(_span_problem(span, f"llm call not stored: {exc}"))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug met by one span costs that call, not the worker
                # A value no bound foresaw must not crash-loop the worker on every restart: the call
                # becomes an ingest_errors row that names the failure, and the record's other calls
                # and its otel_traces rows are stored as usual.
                log.debug("span %s: unexpected failure while normalising", span.span_id, exc_info=True)
                if problems is not None:
                    problems.append(
                        _span_problem(span, f"llm call not stored: internal error {type(exc).__name__}: {exc}"[:1000])
                    )
                continue
            if call.problems and problems is not None:
                problems.extend(
                    _span_problem(span, f"llm call stored without a value: {reason}") for reason in call.problems
                )
            calls.append(call)
            sources.append(span)
        return calls, sources

    def evaluations_from(
        self,
        spans: Sequence[SpanView],
        calls: Sequence[LLMCall],
        call_spans: Sequence[SpanView],
        problems: list[SpanProblem] | None = None,
    ) -> list[Evaluation]:
        """The evaluation results `spans` carry (`call_spans[i]` is the span of `calls[i]`, whose dimensions the
        results on it take); each value stored without gives one entry in `problems`, as for calls."""
        of_span = {id(span): call for span, call in zip(call_spans, calls, strict=True)}
        out: list[Evaluation] = []
        for span in spans:
            # `evaluations_of`'s own fast path, inline: most spans are LLM calls without results.
            if span.attributes.keys().isdisjoint(EVALUATION_KEYS):
                for event in span.events:
                    if event.name == EVALUATION_EVENT:
                        break
                else:
                    continue
            reasons: list[str] = []
            try:
                out.extend(evaluations_of(span, of_span.get(id(span)), reasons))
            except Exception as exc:  # noqa: BLE001 - a bug met by one span costs its results, not the worker
                log.debug("span %s: unexpected failure while reading evaluations", span.span_id, exc_info=True)
                reasons.append(f"evaluations not stored: internal error {type(exc).__name__}: {exc}"[:1000])
            if reasons and problems is not None:
                problems.extend(_span_problem(span, f"evaluation: {reason}") for reason in reasons)
        return out


def _span_problem(span: SpanView, reason: str) -> SpanProblem:
    service = span.resource.get("service.name")
    return SpanProblem(
        reason, service if type(service) is str and len(service) <= MAX_LABEL_CHARS else "", span.trace_id, span.span_id
    )


# Whether a RawAttributesRequest Span carries an attribute without which `normalize_call` gives None.
may_be_llm_call = AttributeMarkers(LLM_MARKER_KEYS)
# The spans the worker decodes: those, the ones without which `run_span` gives None (agent, tool and step
# spans), and the ones without which `evaluations_of` gives nothing (OpenInference EVALUATOR spans carry
# `openinference.span.kind`, one of the LLM markers).
worth_decoding = AttributeMarkers(
    LLM_MARKER_KEYS | AGENT_MARKER_KEYS | EVALUATION_MARKER_KEYS, events=(EVALUATION_EVENT,)
)


def parse_record_once(record: SourceRecord) -> ParsedRecord | Poison:
    """Parse one record, once (processors/decode.py); a record that is not OTLP is poison."""
    try:
        request = decode_request(record.value, keep=worth_decoding)
    except MalformedPayload as exc:
        return Poison(record, str(exc))
    return ParsedRecord(record, request.span_count, request.problems, request.spans)


def parse_records(records: Sequence[SourceRecord]) -> tuple[list[ParsedRecord], list[Poison]]:
    """Parse every record once; the ones that are not OTLP are poison."""
    parsed: list[ParsedRecord] = []
    poison: list[Poison] = []
    for record in records:
        item = parse_record_once(record)
        if isinstance(item, Poison):
            poison.append(item)
        else:
            parsed.append(item)
    return parsed, poison


def decode_parsed_record(item: ParsedRecord, stages: CallStages) -> DecodedRecord:
    """Turn one record's LLM spans into calls and read its evaluation results; a span normalising refuses, and
    each value a call or result is stored without, adds to its problems."""
    problems = list(item.problems)
    calls, call_spans = stages.calls_from(item.spans, problems)
    evaluations = stages.evaluations_from(item.spans, calls, call_spans, problems)
    decoded = DecodedRecord(item.record, item.span_count, calls, problems, call_spans, evaluations=evaluations)
    if stages.agent_partitions:
        call_of = {id(span): call for span, call in zip(call_spans, calls, strict=True)}
        for span in item.spans:
            part = run_span(span, call_of.get(id(span)))
            if part is not None:
                decoded.run_spans.append(part)
    return decoded


def decode_parsed(parsed: Sequence[ParsedRecord], stages: CallStages) -> list[DecodedRecord]:
    return [decode_parsed_record(item, stages) for item in parsed]


def traces_batch(items: Sequence[ParsedRecord | DecodedRecord], fence: Mapping[str, int]) -> OtlpRecords:
    """The otel_traces batch: raw bytes of the records above the table's fence."""
    batch = OtlpRecords("otel_traces")
    for item in items:
        record = item.record
        if record.offset > fence.get(record.source, -1):
            batch.append(record.value, record.source, record.offset, item.span_count)
    return batch


def _tag(rows: TableRows, sources: list[str], offsets: list[int]) -> TableRows:
    rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    rows.columns.extend([sources, offsets])
    return rows


def _per_record(kept: Sequence[DecodedRecord], rows: TableRows, counts: list[int]) -> TableRows:
    """Tag each row with its record's source and offset (`counts[i]` rows came from `kept[i]`)."""
    sources: list[str] = []
    offsets: list[int] = []
    for item, count in zip(kept, counts, strict=True):
        sources.extend([item.record.source] * count)
        offsets.extend([item.record.offset] * count)
    return _tag(rows, sources, offsets)


def problem_rows(kept: Sequence[DecodedRecord], now_ms: int) -> tuple[TableRows, list[int]]:
    rows = TableRows("ingest_errors", list(INGEST_ERRORS_COLUMNS))
    counts = []
    for item in kept:
        record = item.record
        for problem in item.problems:
            values = [
                now_ms,
                "span",
                problem.reason,
                problem.service,
                problem.trace_id,
                problem.span_id,
                record.topic,
                record.partition,
                record.offset,
                0,
                False,
            ]
            for column, value in zip(rows.columns, values, strict=True):
                column.append(value)
        counts.append(len(item.problems))
    return rows, counts


def poison_rows(poison: Sequence[Poison], now_ms: int, stage: str = "decode") -> TableRows:
    """ingest_errors rows for dead-lettered records."""
    rows = TableRows("ingest_errors", list(INGEST_ERRORS_COLUMNS))
    for item in poison:
        record = item.record
        values = [
            now_ms,
            stage,
            item.reason,
            "",
            "",
            "",
            record.topic,
            record.partition,
            record.offset,
            len(record.value),
            True,
        ]
        for column, value in zip(rows.columns, values, strict=True):
            column.append(value)
    return _tag(rows, [p.record.source for p in poison], [p.record.offset for p in poison])


def build_tables(
    decoded: Sequence[DecodedRecord],
    fences: Mapping[str, Mapping[str, int]],
    stages: CallStages,
    now_ms: int | None = None,
    tables: Collection[str] | None = None,
) -> list[TableRows | OtlpRecords]:
    """One batch per table of `tables` (default: every table of `stages.tables`) from the records each table
    has not stored yet."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[TableRows | OtlpRecords] = []

    def unstored(table: str) -> list[DecodedRecord]:
        fence = fences.get(table, {})
        return [d for d in decoded if d.record.offset > fence.get(d.record.source, -1)]

    def wanted(table: str) -> bool:
        return tables is None or table in tables

    if wanted("otel_traces"):
        out.append(traces_batch(decoded, fences.get("otel_traces", {})))
    if wanted("llm_calls"):
        kept = unstored("llm_calls")
        calls = [call for item in kept for call in item.calls]
        out.append(_per_record(kept, call_rows(calls), [len(item.calls) for item in kept]))
    if wanted("ingest_errors"):
        kept = unstored("ingest_errors")
        rows, counts = problem_rows(kept, now_ms)
        out.append(_per_record(kept, rows, counts))
    if wanted("llm_evaluations"):
        kept = unstored("llm_evaluations")
        results = [result for item in kept for result in item.evaluations]
        out.append(_per_record(kept, evaluation_rows(results), [len(item.evaluations) for item in kept]))

    # The signal contract (processors/core/signal.py): once per source, on the calls (or evaluations) of its
    # records above the table's fence, rows tagged with the highest of those offsets.
    for signal in stages.signals:
        table = signal.table.name
        if not wanted(table):
            continue
        by_source: dict[str, list[DecodedRecord]] = {}
        for item in unstored(table):
            by_source.setdefault(item.record.source, []).append(item)
        merged: TableRows | None = None
        for source, items in by_source.items():
            field_name = signal_input(signal)
            rows = signal_rows(signal, [x for item in items for x in getattr(item, field_name)])
            top = max(item.record.offset for item in items)
            _tag(rows, [source] * len(rows), [top] * len(rows))
            if merged is None:
                merged = rows
            else:
                merged.extend(rows)
        if merged is not None:
            out.append(merged)
    return out
