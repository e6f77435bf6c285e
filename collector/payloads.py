"""OTLP/HTTP request bodies to Kafka record values, as the Collector's kafka exporter writes them.

A record value is a serialized ExportTraceServiceRequest (`otlp_proto`). A
protobuf body is forwarded byte for byte after it parsed; a JSON body is
re-encoded. A request bigger than one Kafka record is split along
resource/scope/span boundaries, never inside a span; a span that cannot fit in
one record makes the whole request a permanent error (TooLarge), found before
anything is produced.

Everything here runs before the first byte goes to Kafka, so a request it
refuses leaves nothing behind: inflating (bounded output), parsing (bounded
nesting) and splitting.
"""

from __future__ import annotations

import json
import zlib
from base64 import b64encode
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from processors.core.decode import MalformedPayload, parse_request
from processors.core.errors import PermanentError

__all__ = [
    "BadRequest",
    "TooLarge",
    "UnsupportedEncoding",
    "inflate",
    "parse_protobuf",
    "parse_json",
    "span_count",
    "split_into_records",
]

# protobuf's own nesting limit (json_format's max_recursion_depth and upb's wire parser default);
# the worker re-parses the wire form with the same limit, so anything accepted here decodes there.
MAX_MESSAGE_DEPTH = 100


class BadRequest(PermanentError, ValueError):
    """The body is not a valid OTLP trace export request (HTTP 400 / INVALID_ARGUMENT)."""


class TooLarge(PermanentError, ValueError):
    """The body, inflated, or one of its spans exceeds a configured limit (HTTP 413, permanent)."""


class UnsupportedEncoding(PermanentError, ValueError):
    """A Content-Encoding the receiver does not undo (HTTP 415)."""


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate) producing at most `limit` bytes.

    zlib is asked for at most limit+1 bytes per call, so a gzip bomb costs
    `limit` bytes of memory, not its inflated size. Concatenated gzip members
    (RFC 1952 allows them) are all inflated, within the same budget.
    """
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r} (use gzip, deflate or none)")
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            chunk = inflater.decompress(data, limit - size + 1)
            size += len(chunk)
            if size > limit or inflater.unconsumed_tail:
                raise TooLarge(f"request body inflates to more than {limit} bytes")
            out.append(chunk)
            if not inflater.eof:
                raise BadRequest(f"{encoding} body is truncated")
            data = inflater.unused_data
            if not data:
                return b"".join(out)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from exc


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    try:
        return parse_request(body)
    except MalformedPayload as exc:
        raise BadRequest(str(exc)) from exc


# OTLP/JSON writes these bytes fields as hex where proto3 JSON expects base64.
_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})


def _prepare(node: Any, descriptor: Descriptor, depth: int) -> None:
    """Drop fields the schema does not know (OTLP/JSON receivers MUST ignore them) and turn hex ids
    into base64, so that json_format can then parse strictly: a wrong enum name or a wrong type is
    an error, not a silently dropped value (json_format's ignore_unknown_fields also drops those)."""
    if depth > MAX_MESSAGE_DEPTH:
        raise BadRequest(f"message nested deeper than {MAX_MESSAGE_DEPTH} levels")
    if not isinstance(node, dict):
        return  # json_format reports the wrong type
    for key in list(node):
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        if field is None:
            del node[key]
            continue
        value = node[key]
        if field.type == FieldDescriptor.TYPE_BYTES and field.name in _HEX_ID_FIELDS:
            if isinstance(value, str) and value:
                try:
                    node[key] = b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise BadRequest(f"{key} {value!r} is not hex") from exc
        elif field.enum_type is not None:
            # json_format itself takes true as 1 and 1.5 as 1: an enum is an integer or a value name.
            for item in value if isinstance(value, list) else [value]:
                if item is not None and (isinstance(item, bool) or not isinstance(item, (int, str))):
                    raise BadRequest(f"{key} {item!r} is not a {field.enum_type.name} value")
        elif field.message_type is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                _prepare(item, field.message_type, depth + 1)


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("JSON nested too deeply") from exc
    if not isinstance(document, dict):
        raise BadRequest("body is not a JSON object")
    _prepare(document, ExportTraceServiceRequest.DESCRIPTOR, 1)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), max_recursion_depth=MAX_MESSAGE_DEPTH)
    except (json_format.ParseError, AttributeError, TypeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"JSON is not an OTLP ExportTraceServiceRequest: {exc}") from exc


def span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def split_into_records(request: ExportTraceServiceRequest, max_bytes: int, wire: bytes | None = None) -> list[bytes]:
    """Record values of at most `max_bytes` each; TooLarge if one span alone (with its resource and
    scope) does not fit, since a span is never cut and Kafka would refuse the record."""
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
    for record in records:
        if len(record) > max_bytes:
            raise TooLarge(
                f"a span needs a {len(record)}-byte Kafka record, over the {max_bytes}-byte limit"
                " (receiver.max_record_bytes); shorten its attributes or events"
            )
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
