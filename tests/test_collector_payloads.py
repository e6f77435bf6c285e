"""Receiver-side payload handling: JSON to protobuf, record splitting, bounded inflation."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.payloads import BadRequest, TooLarge, inflate, parse_json, parse_protobuf, span_count, split_into_records


def _request(layout: list[list[int]], attr_bytes: int = 40) -> ExportTraceServiceRequest:
    """layout[r][s] = number of spans in scope s of resource r."""
    request = ExportTraceServiceRequest()
    n = 0
    for r, scopes in enumerate(layout):
        rs = request.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", f"svc-{r}"
        for s, count in enumerate(scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope-{s}"
            for _ in range(count):
                n += 1
                span = ss.spans.add(name=f"span-{n}", trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"))
                a = span.attributes.add()
                a.key, a.value.string_value = "payload", "x" * attr_bytes
    return request


def _spans(request: ExportTraceServiceRequest) -> list[tuple[str, str, str]]:
    return [
        (rs.resource.attributes[0].value.string_value, ss.scope.name, span.name)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


@settings(max_examples=60, deadline=None)
@given(
    layout=st.lists(st.lists(st.integers(0, 40), min_size=1, max_size=3), min_size=1, max_size=4),
    limit=st.integers(300, 3000),
)
def test_split_keeps_every_span_with_its_resource_and_scope_within_the_limit(
    layout: list[list[int]], limit: int
) -> None:
    request = _request(layout)
    records = split_into_records(request, limit)
    rebuilt = [parse_protobuf(r) for r in records]
    assert sorted(s for r in rebuilt for s in _spans(r)) == sorted(_spans(request))
    assert all(len(r) <= limit for r in records)  # every span here is far smaller than the limit
    assert (len(records) == 0) == (span_count(request) == 0 and not request.resource_spans)


def test_small_request_is_forwarded_byte_for_byte() -> None:
    wire = _request([[3]]).SerializeToString()
    assert split_into_records(parse_protobuf(wire), 1_000_000, wire) == [wire]


def test_json_ids_are_hex_and_unknown_fields_are_ignored() -> None:
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s", "kind": 2,
         "startTimeUnixNano": "1", "futureField": 1}]}], "alsoUnknown": True}]}).encode()  # fmt: skip
    span = parse_json(body).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c" and span.span_id.hex() == "eee19b7ec3c1b174"
    with pytest.raises(BadRequest):
        parse_json(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}')
    with pytest.raises(BadRequest):
        parse_json(b"[1, 2]")


def test_a_span_too_big_for_any_record_refuses_the_whole_split() -> None:
    request = _request([[2]], attr_bytes=40)
    request.resource_spans[0].scope_spans[0].spans[1].attributes[0].value.string_value = "x" * 5000
    with pytest.raises(TooLarge, match="max_record_bytes"):
        split_into_records(request, 2000)
    assert len(split_into_records(request, 6000)) == 1


def test_inflate_bounds_its_output_and_refuses_broken_streams() -> None:
    body = _request([[3]]).SerializeToString()
    assert inflate(gzip.compress(body), "gzip", len(body)) == body
    assert inflate(gzip.compress(body[:10]) + gzip.compress(body[10:]), "GZIP", len(body)) == body  # two members
    assert inflate(zlib.compress(body), "deflate", len(body)) == body
    with pytest.raises(TooLarge):
        inflate(gzip.compress(body), "gzip", len(body) - 1)
    with pytest.raises(TooLarge):
        inflate(gzip.compress(b"\0" * 50_000_000), "gzip", 1_000_000)
    with pytest.raises(BadRequest):
        inflate(gzip.compress(body)[:-4], "gzip", 10_000)
    with pytest.raises(BadRequest):
        inflate(b"not gzip at all", "gzip", 10_000)


def test_json_is_parsed_strictly_except_for_unknown_fields() -> None:
    span = '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "s", "kind": %s, "newField": {"x": [1]}}]}]}]}'
    assert parse_json((span % "3").encode()).resource_spans[0].scope_spans[0].spans[0].kind == 3
    assert parse_json((span % '"SPAN_KIND_CLIENT"').encode()).resource_spans[0].scope_spans[0].spans[0].kind == 3
    for wrong in ('"SERVER?"', "true", "1.5", '{"a": 1}'):
        with pytest.raises(BadRequest):
            parse_json((span % wrong).encode())
    deep = '{"kvlistValue": {"values": [{"key": "k", "value": ' * 300 + '{"stringValue": "x"}' + "}]}}" * 300
    with pytest.raises(BadRequest, match="nested"):
        parse_json(
            (
                '{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "a", "value": '
                + deep
                + "}]}]}]}]}"
            ).encode()
        )
