"""Decode stage: one Kafka record (an OTLP ExportTraceServiceRequest) into SpanViews.

A record that does not parse is poison (the caller dead-letters it). A span
that parses but is unusable (bad ids, no start time or one outside the
event-time window of processors/core/bounds.py) becomes an ingest error
and the rest of the record proceeds. Records are decoded from the
RawAttributesRequest schema (processors/core/otlp_schema.py): a span's attributes
stay wire bytes until a span is kept, and then come from a KeyValueCache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processors.core.bounds import MAX_LABEL_CHARS, TIME_MAX_NS, TIME_MIN_NS, show
from processors.core.otlp_schema import RawAttributesRequest
from processors.core.otlp_values import KeyValueCache, attributes_dict
from processors.core.records import SpanEvent, SpanLink, SpanView
from processors.core.errors import PermanentError

__all__ = ["MalformedPayload", "SpanProblem", "DecodedRequest", "SpanFilter", "decode_request", "parse_request", "parse_record",
           "parse_checked_record"]

# Shared by every decode in the process: the attribute encodings seen so far.
_SPAN_ATTRIBUTES = KeyValueCache()


class MalformedPayload(PermanentError, ValueError):
    """The bytes are not a serialized ExportTraceServiceRequest."""


@dataclass(slots=True, frozen=True)
class SpanProblem:
    """A span skipped for a reason; it goes to `ingest_errors`."""

    reason: str
    service: str
    trace_id: str
    span_id: str


@dataclass(slots=True)
class DecodedRequest:
    spans: list[SpanView] = field(default_factory=list)  # the valid spans `keep` chose
    problems: list[SpanProblem] = field(default_factory=list)
    span_count: int = 0  # every valid span, kept or not (what otel_traces stores)


# Chooses, from the RawAttributesRequest Span, which spans become SpanViews.
SpanFilter = Callable[[Any], bool]


def _parse(message_class: Any, payload: bytes | bytearray | memoryview) -> Any:
    try:
        return message_class.FromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not an OTLP ExportTraceServiceRequest: {exc}") from exc


def parse_request(payload: bytes | bytearray | memoryview) -> ExportTraceServiceRequest:
    """Parse wire bytes; raise MalformedPayload with the parser's reason."""
    return _parse(ExportTraceServiceRequest, payload)


def parse_record(payload: bytes | bytearray | memoryview) -> Any:
    """Wire bytes as a RawAttributesRequest. It does not look inside span attributes:
    `parse_request` is what tells a malformed record apart."""
    return _parse(RawAttributesRequest, payload)


def parse_checked_record(payload: bytes | bytearray | memoryview) -> tuple[Any, int]:
    """(RawAttributesRequest, spans in it) for a record the full OTLP parse accepts: that parse
    checks every attribute of every span, so a malformed one makes the whole record poison."""
    full = parse_request(payload)
    spans = sum(len(scope.spans) for resource in full.resource_spans for scope in resource.scope_spans)
    return parse_record(payload), spans


def decode_request(payload: bytes | Any, keep: SpanFilter | None = None) -> DecodedRequest:
    """Check every span; flatten resource/scope/span nesting into SpanViews for those `keep` accepts.

    `payload` is wire bytes or a RawAttributesRequest. Without `keep` every valid span becomes
    a SpanView. The worker passes a filter because only LLM spans need one: ClickHouse stores
    all spans from the raw bytes.
    """
    request = parse_checked_record(payload)[0] if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    decoded = DecodedRequest()
    spans_out = decoded.spans
    valid = 0
    for resource_spans in request.resource_spans:
        resource: dict[str, Any] | None = None  # built on first need: most spans never need it
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                problem = None
                if len(trace_id) != 16 or not any(trace_id):
                    problem = "invalid trace_id (need 16 non-zero bytes)"
                elif len(span_id) != 8 or not any(span_id):
                    problem = "invalid span_id (need 8 non-zero bytes)"
                elif span.start_time_unix_nano == 0:
                    problem = "missing start_time_unix_nano"
                elif not TIME_MIN_NS <= span.start_time_unix_nano < TIME_MAX_NS:
                    problem = f"start_time_unix_nano {show(span.start_time_unix_nano)} outside 2000-01-01..2200-01-01"
                if problem is None:
                    valid += 1
                    if keep is not None and not keep(span):
                        continue
                if resource is None:
                    resource = attributes_dict(resource_spans.resource.attributes)
                if problem is not None:
                    decoded.problems.append(SpanProblem(problem, str(resource.get("service.name", ""))[:MAX_LABEL_CHARS], trace_id.hex(), span_id.hex()))
                    continue
                spans_out.append(_span_view(span, resource, scope.name, scope.version))
    decoded.span_count = valid
    return decoded


def _span_view(span: Any, resource: dict[str, Any], scope_name: str, scope_version: str) -> SpanView:
    events = span.events
    links = span.links
    return SpanView(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=span.status.code,
        status_message=span.status.message,
        attributes=_SPAN_ATTRIBUTES.attributes(span.attributes),
        resource=resource,
        events=[SpanEvent(event.time_unix_nano, event.name, attributes_dict(event.attributes)) for event in events] if events else [],
        scope_name=scope_name,
        scope_version=scope_version,
        trace_state=span.trace_state,
        links=[SpanLink(link.trace_id.hex(), link.span_id.hex(), link.trace_state, attributes_dict(link.attributes)) for link in links]
        if links
        else [],
    )
