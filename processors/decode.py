"""Decode stage: one Kafka record (an OTLP ExportTraceServiceRequest) into SpanViews.

A record that does not parse is poison (the caller dead-letters it). A span
that parses but is unusable (bad ids, no start time) becomes an ingest error
and the rest of the record proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processors.otlp_values import attributes_dict
from processors.records import SpanEvent, SpanLink, SpanView

__all__ = ["MalformedPayload", "SpanProblem", "DecodedRequest", "decode_request", "parse_request"]


class MalformedPayload(ValueError):
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
    spans: list[SpanView] = field(default_factory=list)
    problems: list[SpanProblem] = field(default_factory=list)


def parse_request(payload: bytes) -> ExportTraceServiceRequest:
    """Parse wire bytes; raise MalformedPayload with the parser's reason."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise MalformedPayload(f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
    return request


def decode_request(payload: bytes | ExportTraceServiceRequest) -> DecodedRequest:
    """Flatten resource/scope/span nesting into SpanViews, checking each span."""
    request = parse_request(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    decoded = DecodedRequest()
    spans_out = decoded.spans
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name
            scope_version = scope_spans.scope.version
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or not any(trace_id):
                    decoded.problems.append(SpanProblem("invalid trace_id (need 16 non-zero bytes)", service, trace_id.hex(), span_id.hex()))
                    continue
                if len(span_id) != 8 or not any(span_id):
                    decoded.problems.append(SpanProblem("invalid span_id (need 8 non-zero bytes)", service, trace_id.hex(), span_id.hex()))
                    continue
                if span.start_time_unix_nano == 0:
                    decoded.problems.append(SpanProblem("missing start_time_unix_nano", service, trace_id.hex(), span_id.hex()))
                    continue
                events = (
                    [SpanEvent(event.time_unix_nano, event.name, attributes_dict(event.attributes)) for event in span.events]
                    if span.events
                    else []
                )
                spans_out.append(
                    SpanView(
                        trace_id=trace_id.hex(),
                        span_id=span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        attributes=attributes_dict(span.attributes),
                        resource=resource,
                        events=events,
                        scope_name=scope_name,
                        scope_version=scope_version,
                        trace_state=span.trace_state,
                        links=[
                            SpanLink(link.trace_id.hex(), link.span_id.hex(), link.trace_state, attributes_dict(link.attributes))
                            for link in span.links
                        ]
                        if span.links
                        else [],
                    )
                )
    return decoded
