"""Each Kafka record is parsed once in Python, from the batch handler to the rows, a bisected insert included.

Protobuf's message classes are wrapped to record what they parse (a library, not one of our components);
the batch runs through the real BatchHandler into chDB.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llmops.config import Settings
from processors.batch_handler import BatchHandler
from processors.core.otlp_schema import RawAttributesRequest
from processors.core.pipeline import Poison, SourceRecord, parse_records
from processors.stages import build_call_stages
from sinks.clickhouse.writer import ClickHouseSink

START = 1_764_000_000_000_000_000
SOURCE = "one-parse/0"


def _request(service: str, llm_spans: int, other_spans: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    scope = rs.scope_spans.add()
    for n in range(llm_spans + other_spans):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", kind=3,
                               start_time_unix_nano=START + n, end_time_unix_nano=START + n + 10**9)  # fmt: skip
        span.attributes.add(key="http.route").value.string_value = "/chat"
        if n < llm_spans:
            for key, value in (
                ("gen_ai.operation.name", "chat"),
                ("gen_ai.provider.name", "openai"),
                ("gen_ai.request.model", "gpt-4o-mini"),
            ):
                span.attributes.add(key=key).value.string_value = value
            span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 100 + n
            span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 20
    return request


@pytest.fixture
def parses() -> Iterator[Counter[bytes]]:
    """Every input parsed by the OTLP request classes (the full one and the worker's schema copy)."""
    seen: Counter[bytes] = Counter()
    originals = {cls: cls.FromString for cls in (ExportTraceServiceRequest, RawAttributesRequest)}

    def counting(original: Any) -> Any:
        def from_string(payload: bytes) -> Any:
            seen[bytes(payload)] += 1
            return original(payload)

        return staticmethod(from_string)

    for cls, original in originals.items():
        cls.FromString = counting(original)
    try:
        yield seen
    finally:
        for cls, original in originals.items():
            cls.FromString = original


def test_each_record_is_parsed_once_through_the_handler_and_its_bisect(
    chdb_client: Client, parses: Counter[bytes]
) -> None:
    # Python's parser keeps an unknown *group* field; ClickHouse's Protobuf reader refuses it (code 444),
    # so the otel_traces insert of this batch fails and is bisected down to that record.
    refused = _request("one-parse-refused", 2, 1).SerializeToString() + b"\xa3\x01\x08\x01\xa4\x01"
    values = [_request("one-parse", 3, 2).SerializeToString(), refused, _request("one-parse", 1, 4).SerializeToString(),
              b"\xff\xfe not protobuf", _request("one-parse", 4, 0).SerializeToString()]  # fmt: skip
    records = [SourceRecord("otlp_spans", 0, offset, value, SOURCE) for offset, value in enumerate(values, start=100)]
    dead: list[Poison] = []

    async def dead_letter(item: Poison) -> None:
        dead.append(item)

    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), build_call_stages(Settings()), dead_letter)
    asyncio.run(handler.handle(records))

    assert {p.record.offset for p in dead} == {103, 101}  # not OTLP; refused by ClickHouse (the bisect ran)
    assert [parses[value] for value in values] == [1] * len(values)
    # Nothing else of record size was parsed: only single attributes, in the checks of processors/otlp_values.py.
    assert all(len(payload) < 200 for payload in parses.keys() - set(values))
    stored = chdb_client.query("SELECT count() FROM llmops.llm_calls WHERE service = 'one-parse'").result_rows[0][0]
    assert stored == 3 + 1 + 4 and handler.stats.calls == 3 + 2 + 1 + 4


def test_a_malformed_attribute_in_any_span_makes_the_record_poison_as_the_full_parse_does() -> None:
    """Spans with and without markers, valid or refused by the bad-span rule: the one parse finds
    the bad attribute wherever it is, as ExportTraceServiceRequest.FromString does."""
    bad_attributes = {
        "truncated": b"\x0a\x40truncated",
        "invalid utf-8 key": b"\x0a\x02\xff\xfe",
        "invalid utf-8 value": KeyValue(key="k").SerializeToString() + b"\x12\x04\x0a\x02\xc3\x28",
    }
    records = []
    for name, bad in bad_attributes.items():
        for position in ("first", "after marker"):
            for span_ok in (True, False):
                request = RawAttributesRequest.FromString(_request(name, 1, 1).SerializeToString())
                for span in request.resource_spans[0].scope_spans[0].spans:
                    if not span_ok:
                        span.trace_id = bytes(16)
                    if position == "first":
                        span.attributes.insert(0, bad)
                    else:
                        span.attributes.append(bad)
                records.append(request.SerializeToString())
    records.append(_request("fine", 1, 1).SerializeToString())

    parsed, poison = parse_records([SourceRecord("otlp_spans", 0, n, value, SOURCE) for n, value in enumerate(records)])
    refused_by_full_parse = set()
    for n, value in enumerate(records):
        try:
            ExportTraceServiceRequest.FromString(value)
        except Exception:  # noqa: BLE001 - DecodeError; the set is compared below
            refused_by_full_parse.add(n)
    assert {p.record.offset for p in poison} == refused_by_full_parse == set(range(len(records) - 1))
    assert [p.record.offset for p in parsed] == [len(records) - 1]


@pytest.mark.parametrize("depth", range(40, 52))
def test_nested_values_are_refused_at_the_depth_the_full_parse_refuses(depth: int) -> None:
    """The parser limits nesting per parse; an attribute checked alone must not get the levels its span,
    scope and resource take in the record."""
    value = AnyValue(string_value="x")
    for _ in range(depth):
        outer = AnyValue()
        outer.array_value.values.add().CopyFrom(value)
        value = outer
    request = _request("deep", 1, 1)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="nested").value.CopyFrom(value)
    # Serialized without the full parser's check: it is what a producer could send.
    wire = request.SerializeToString()
    try:
        ExportTraceServiceRequest.FromString(wire)
        full_accepts = True
    except Exception:  # noqa: BLE001 - DecodeError
        full_accepts = False
    parsed, poison = parse_records([SourceRecord("otlp_spans", 0, depth, wire, SOURCE)])
    assert (len(parsed), len(poison)) == ((1, 0) if full_accepts else (0, 1))


@pytest.mark.parametrize("levels", [1, 50, 94, 95, 96, 97, 98, 100, 101])
def test_unknown_groups_are_refused_at_the_depth_the_full_parse_refuses(levels: int) -> None:
    """A scalar attribute can nest too: an unknown group field inside it takes a level per group."""
    raw = KeyValue(key="k", value=AnyValue(string_value="v")).SerializeToString() + b"\x1b" * levels + b"\x1c" * levels
    request = RawAttributesRequest.FromString(_request("groups", 1, 1).SerializeToString())
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.attributes.append(raw)
    wire = request.SerializeToString()
    try:
        ExportTraceServiceRequest.FromString(wire)
        full_accepts = True
    except Exception:  # noqa: BLE001 - DecodeError
        full_accepts = False
    parsed, poison = parse_records([SourceRecord("otlp_spans", 0, levels, wire, SOURCE)])
    assert (len(parsed), len(poison)) == ((1, 0) if full_accepts else (0, 1))
