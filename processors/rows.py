"""Row builders for the raw tables: otel_traces, llm_calls, ingest_errors.

Each takes already-decoded objects and returns columnar TableRows; the caller
appends the delivery columns (_ingest_source, _ingest_offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from processors.otlp_values import value_to_string
from processors.records import LLMCall, SpanView
from sinks.clickhouse.batches import TableRows

__all__ = [
    "OTEL_TRACES_COLUMNS",
    "LLM_CALLS_COLUMNS",
    "INGEST_ERRORS_COLUMNS",
    "trace_rows",
    "call_rows",
    "SPAN_KIND_NAMES",
    "STATUS_CODE_NAMES",
]

# The clickhouseexporter writes kinds and status codes as their proto enum names.
SPAN_KIND_NAMES = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
STATUS_CODE_NAMES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")

OTEL_TRACES_COLUMNS = [
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
]

LLM_CALLS_COLUMNS = [
    "ts",
    "trace_id",
    "span_id",
    "service",
    "environment",
    "team",
    "provider",
    "request_model",
    "response_model",
    "model",
    "operation",
    "prompt_name",
    "prompt_version",
    "agent",
    "conversation_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost",
    "reported_cost",
    "pricing_entry",
    "duration_ms",
    "ttft_ms",
    "status",
    "error_type",
    "finish_reason",
    "convention",
]

INGEST_ERRORS_COLUMNS = [
    "ts",
    "stage",
    "reason",
    "service",
    "trace_id",
    "span_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "payload_bytes",
    "dead_lettered",
]


def _string_map(attributes: dict) -> dict[str, str]:
    return {key: value if type(value) is str else value_to_string(value) for key, value in attributes.items()}


def trace_rows(spans: Sequence[SpanView]) -> TableRows:
    """One otel_traces row per span. Resource maps are stringified once per resource."""
    rows = TableRows("otel_traces", list(OTEL_TRACES_COLUMNS))
    (ts, trace_id, span_id, parent, state, name, kind, service, res_attrs, scope_name, scope_version, span_attrs,
     duration, status, status_msg, ev_ts, ev_name, ev_attrs, ln_trace, ln_span, ln_state, ln_attrs) = rows.columns
    resource_cache: dict[int, tuple[str, dict[str, str]]] = {}
    kind_names = SPAN_KIND_NAMES
    status_names = STATUS_CODE_NAMES
    for span in spans:
        cached = resource_cache.get(id(span.resource))
        if cached is None:
            cached = (str(span.resource.get("service.name", "")), _string_map(span.resource))
            resource_cache[id(span.resource)] = cached
        ts.append(span.start_ns)
        trace_id.append(span.trace_id)
        span_id.append(span.span_id)
        parent.append(span.parent_span_id)
        state.append(span.trace_state)
        name.append(span.name)
        kind.append(kind_names[span.kind] if 0 <= span.kind < len(kind_names) else "")
        service.append(cached[0])
        res_attrs.append(cached[1])
        scope_name.append(span.scope_name)
        scope_version.append(span.scope_version)
        span_attrs.append(_string_map(span.attributes))
        duration.append(max(span.end_ns - span.start_ns, 0))
        status.append(status_names[span.status_code] if 0 <= span.status_code < 3 else "")
        status_msg.append(span.status_message)
        events = span.events
        if events:  # most spans have none: skip building empty comprehensions
            ev_ts.append([e.time_ns for e in events])
            ev_name.append([e.name for e in events])
            ev_attrs.append([_string_map(e.attributes) for e in events])
        else:
            ev_ts.append([])
            ev_name.append([])
            ev_attrs.append([])
        links = span.links
        if links:
            ln_trace.append([link.trace_id for link in links])
            ln_span.append([link.span_id for link in links])
            ln_state.append([link.trace_state for link in links])
            ln_attrs.append([_string_map(link.attributes) for link in links])
        else:
            ln_trace.append([])
            ln_span.append([])
            ln_state.append([])
            ln_attrs.append([])
    return rows


def call_rows(calls: Sequence[LLMCall]) -> TableRows:
    rows = TableRows("llm_calls", list(LLM_CALLS_COLUMNS))
    columns = rows.columns
    # Column names are LLMCall attribute names (the `model` property included), except ts.
    getters = [attrgetter("ts_ns" if name == "ts" else name) for name in LLM_CALLS_COLUMNS]
    for column, getter in zip(columns, getters):
        column.extend(getter(call) for call in calls)
    return rows
