"""OTLP/HTTP request bodies to Kafka record values, as the Collector's kafka exporter writes them.

A record value is a serialized ExportTraceServiceRequest (`otlp_proto`). A
protobuf body is forwarded byte for byte after it parsed; a JSON body is
re-encoded. A request bigger than one Kafka record is split along
resource/scope/span boundaries, never inside a span.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from processors.decode import MalformedPayload, parse_request

__all__ = [
    "BadRequest",
    "TooLarge",
    "parse_protobuf",
    "parse_json",
    "span_count",
    "split_into_records",
]


class BadRequest(ValueError):
    """The body is not a valid OTLP trace export request (HTTP 400 / INVALID_ARGUMENT)."""


class TooLarge(ValueError):
    """The body exceeds the configured limit (HTTP 413 / RESOURCE_EXHAUSTED)."""


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    try:
        return parse_request(body)
    except MalformedPayload as exc:
        raise BadRequest(str(exc)) from exc


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    """OTLP/JSON writes ids as hex strings where proto3 JSON expects base64."""
    for key in _ID_FIELDS:
        value = node.get(key)
        if isinstance(value, str) and value:
            try:
                node[key] = b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError as exc:
                raise BadRequest(f"{key} {value!r} is not hex") from exc


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object")
    try:
        for resource_spans in document.get("resourceSpans") or document.get("resource_spans") or []:
            for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []:
                for span in scope_spans.get("spans") or []:
                    _hex_ids_to_base64(span)
                    for link in span.get("links") or []:
                        _hex_ids_to_base64(link)
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except BadRequest:
        raise
    except (json_format.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise BadRequest(f"JSON is not an OTLP ExportTraceServiceRequest: {exc}") from exc


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def split_into_records(request: ExportTraceServiceRequest, max_bytes: int, wire: bytes | None = None) -> list[bytes]:
    """Record values of at most `max_bytes` each (a single span larger than that stays alone)."""
    if wire is None:
        wire = request.SerializeToString()
    if len(wire) <= max_bytes:
        return [wire] if request.resource_spans else []
    records: list[bytes] = []
    current = ExportTraceServiceRequest()
    current_size = 0

    def flush() -> None:
        nonlocal current, current_size
        if current.resource_spans:
            records.append(current.SerializeToString())
        current = ExportTraceServiceRequest()
        current_size = 0

    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            piece = _shell(resource_spans, scope_spans)
            overhead = piece.ByteSize() + 16  # the resource/scope shell and the length prefixes
            in_piece = 0
            for span in scope_spans.spans:
                size = span.ByteSize() + 8
                if current_size + overhead + in_piece + size > max_bytes and (current_size or in_piece):
                    _append(current, piece)
                    flush()
                    piece = _shell(resource_spans, scope_spans)
                    in_piece = 0
                piece.scope_spans[0].spans.append(span)
                in_piece += size
            _append(current, piece)
            current_size += overhead + in_piece
    flush()
    return records


def _shell(resource_spans: ResourceSpans, scope_spans: ScopeSpans) -> ResourceSpans:
    """A copy of the resource and scope with no spans yet."""
    out = ResourceSpans(schema_url=resource_spans.schema_url)
    out.resource.CopyFrom(resource_spans.resource)
    scope = out.scope_spans.add(schema_url=scope_spans.schema_url)
    scope.scope.CopyFrom(scope_spans.scope)
    return out


def _append(request: ExportTraceServiceRequest, piece: ResourceSpans) -> None:
    if piece.scope_spans[0].spans:
        request.resource_spans.append(piece)
