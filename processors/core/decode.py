"""Decode stage: one Kafka record (an OTLP ExportTraceServiceRequest) into SpanViews, in one parse.

The record is parsed once, with the RawAttributesRequest schema (processors/core/otlp_schema.py), whose
span attributes stay wire bytes. One pass over its spans then gives all the worker needs from it:

- whether it is OTLP: the parse checks everything but span attributes, and the pass parses each span
  attribute as a KeyValue unless those exact bytes were checked before (KeyValueCache), so a record
  is poison (MalformedPayload) exactly when the full OTLP parse refuses it;
- the spans the bad-span rule refuses (`span_problem`), which become `ingest_errors` rows; the
  otel_traces view's WHERE clause applies the same rule (tests/test_bad_span_rule.py checks it);
- the number of valid spans (the rows otel_traces gets from the record);
- SpanViews for the valid spans carrying a marker attribute or event (`keep`), attributes from the cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processors.core.bounds import MAX_LABEL_CHARS, TIME_MAX_NS, TIME_MIN_NS, show
from processors.core.errors import PermanentError
from processors.core.otlp_schema import RAW_PACKAGE_PREFIX, RawAttributesRequest
from processors.core.otlp_values import KeyValueCache, attributes_dict
from processors.core.records import SpanEvent, SpanLink, SpanView

__all__ = [
    "MalformedPayload",
    "SpanProblem",
    "DecodedRequest",
    "AttributeMarkers",
    "decode_request",
    "parse_request",
    "parse_record",
    "span_problem",
]

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


class AttributeMarkers:
    """Attribute keys (and event names) whose presence makes a span worth decoding.

    Keys are tested on a KeyValue's wire bytes. Encoders write a KeyValue's key first (field order):
    tag 0x0a, length, name, so the first 2 + length bytes are a marker's `prefixes` entry exactly when
    the key is that marker: one set lookup (`heads`) per attribute, whatever the number of markers. A
    KeyValue encoded with its key not first is searched whole for the names (a name inside a value is
    then a harmless yes). `events` names span events that mark a span too (an evaluation result
    recorded on a span without a marker key): the parse gives events as messages, and a span no key
    marked costs one `span.events` access. Calling it on a RawAttributesRequest Span tells whether any
    of its attributes or events is a marker.
    """

    __slots__ = ("events", "heads", "names", "prefixes")

    def __init__(self, keys: Iterable[str], events: Iterable[str] = ()) -> None:
        names = sorted(key.encode() for key in keys)
        if any(len(name) >= 128 for name in names):
            raise ValueError("marker keys must be shorter than 128 bytes (a one-byte length)")
        self.prefixes = tuple(b"\x0a" + bytes([len(name)]) + name for name in names)
        self.heads = frozenset(self.prefixes)
        self.names = tuple(names)
        self.events = frozenset(events)

    def matches(self, encoded: bytes) -> bool:
        if _head(encoded) in self.heads:
            return True
        return not encoded.startswith(b"\x0a") and any(name in encoded for name in self.names)

    def marks_events(self, events: Any) -> bool:
        """Whether a span's events (OTLP Span.Event messages) include a marker event."""
        names = self.events
        return any(event.name in names for event in events)

    def __call__(self, span: Any) -> bool:
        return any(self.matches(encoded) for encoded in span.attributes) or (
            bool(self.events) and self.marks_events(span.events)
        )


def _head(encoded: bytes) -> bytes:
    """A KeyValue's tag, key length and key when its key comes first (else bytes that start no marker)."""
    return encoded[: 2 + encoded[1]] if len(encoded) > 1 else encoded


def _parse(message_class: Any, payload: bytes | bytearray | memoryview) -> Any:
    try:
        return message_class.FromString(payload)
    except DecodeError as exc:
        # The schema copy's package is an implementation detail: name the OTLP message.
        raise MalformedPayload(
            f"not an OTLP ExportTraceServiceRequest: {str(exc).replace(RAW_PACKAGE_PREFIX, '')}"
        ) from exc


def parse_request(payload: bytes | bytearray | memoryview) -> ExportTraceServiceRequest:
    """Parse wire bytes as OTLP; raise MalformedPayload with the parser's reason (the receiver's check)."""
    return _parse(ExportTraceServiceRequest, payload)


def parse_record(payload: bytes | bytearray | memoryview) -> Any:
    """Wire bytes as a RawAttributesRequest. It does not look inside span attributes:
    `decode_request` is what tells a malformed record apart."""
    return _parse(RawAttributesRequest, payload)


def span_problem(trace_id: bytes, span_id: bytes, start_time_unix_nano: int) -> str | None:
    """The bad-span rule: why a span is left out of otel_traces and llm_calls, or None if it is not.

    The otel_traces view (schemas/migrations/macros.sql, otel_traces_select) has the same rule as
    its WHERE clause; tests/test_bad_span_rule.py feeds both the same spans.
    """
    if len(trace_id) != 16 or not any(trace_id):
        return "invalid trace_id (need 16 non-zero bytes)"
    if len(span_id) != 8 or not any(span_id):
        return "invalid span_id (need 8 non-zero bytes)"
    if start_time_unix_nano == 0:
        return "missing start_time_unix_nano"
    if not TIME_MIN_NS <= start_time_unix_nano < TIME_MAX_NS:
        return f"start_time_unix_nano {show(start_time_unix_nano)} outside 2000-01-01..2200-01-01"
    return None


def decode_request(payload: bytes | Any, keep: AttributeMarkers | None = None) -> DecodedRequest:
    """Check every span; flatten resource/scope/span nesting into SpanViews for those `keep` marks.

    `payload` is wire bytes (parsed here, once) or a RawAttributesRequest. Raises MalformedPayload
    for a record that is not OTLP, span attributes included. Without `keep` every valid span
    becomes a SpanView. The worker passes markers because only LLM spans need one: ClickHouse
    stores all spans from the raw bytes.
    """
    request = parse_record(payload) if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    cache = _SPAN_ATTRIBUTES
    checked = cache.checked
    heads = keep.heads if keep is not None else frozenset()
    marker_events = keep is not None and bool(keep.events)
    decoded = DecodedRequest()
    spans_out = decoded.spans
    valid = 0
    try:
        for resource_spans in request.resource_spans:
            resource: dict[str, Any] | None = None  # built on first need: most spans never need it
            for scope_spans in resource_spans.scope_spans:
                scope = scope_spans.scope
                for span in scope_spans.spans:
                    encoded = span.attributes
                    # One loop over the attributes finds a marker and checks the attributes before it;
                    # a marked span's attributes are checked by the decode below (or by `check_all`).
                    marked = keep is None
                    if not marked:
                        for raw in encoded:
                            if (raw[: 2 + raw[1]] if len(raw) > 1 else raw) in heads or (
                                not raw.startswith(b"\x0a") and keep.matches(raw)  # type: ignore[union-attr]
                            ):
                                marked = True
                                break
                            if raw not in checked:
                                cache.check(raw)
                        if not marked and marker_events and span.events:
                            marked = keep.marks_events(span.events)  # type: ignore[union-attr]
                    trace_id = span.trace_id
                    span_id = span.span_id
                    problem = span_problem(trace_id, span_id, span.start_time_unix_nano)
                    if problem is None:
                        valid += 1
                        if not marked:
                            continue
                    elif marked:
                        cache.check_all(encoded)
                    if resource is None:
                        resource = attributes_dict(resource_spans.resource.attributes)
                    if problem is not None:
                        decoded.problems.append(
                            SpanProblem(
                                problem,
                                str(resource.get("service.name", ""))[:MAX_LABEL_CHARS],
                                trace_id.hex(),
                                span_id.hex(),
                            )
                        )
                        continue
                    spans_out.append(_span_view(span, resource, scope.name, scope.version))
    except DecodeError as exc:
        raise MalformedPayload(f"not an OTLP ExportTraceServiceRequest: span attribute: {exc}") from exc
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
        events=[SpanEvent(event.time_unix_nano, event.name, attributes_dict(event.attributes)) for event in events]
        if events
        else [],
        scope_name=scope_name,
        scope_version=scope_version,
        trace_state=span.trace_state,
        links=[
            SpanLink(link.trace_id.hex(), link.span_id.hex(), link.trace_state, attributes_dict(link.attributes))
            for link in links
        ]
        if links
        else [],
    )
