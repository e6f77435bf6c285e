"""otel_traces as ClickHouse fills it from raw OTLP bytes (migrations 005 and 006, sinks/clickhouse/otlp_ingest.py).

Requests are built with the OTLP protobuf classes, written through the real ClickHouseSink into chDB,
and read back. The expected strings are the Collector clickhouseexporter's (pcommon Value.AsString()):
scalars as text, arrays and maps as JSON.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import ArrayValue

import processors.core.normalize as normalize_module
from processors.core.decode import decode_request, parse_record
from processors.core.normalize import LLM_MARKER_KEYS, normalize_call
from processors.core.pipeline import may_be_llm_call
from processors.core.records import SpanView
from processors.core.tables import OtlpRecords
from sinks.clickhouse.migrations import available_migrations
from sinks.clickhouse.otlp_ingest import frame_records, insert_settings
from sinks.clickhouse.writer import ClickHouseSink
from tests.otlp_values_build import set_any_value

START = 1_764_000_000_000_000_000


_counter = iter(range(1, 1 << 30))


def _ids() -> tuple[bytes, bytes]:
    n = next(_counter)
    return n.to_bytes(16, "big"), n.to_bytes(8, "big")


def _request(
    service: str, spans: list[dict[str, Any]], resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {"service.name": service, **(resource or {})}.items():
        set_any_value(rs.resource.attributes.add(key=key).value, value)
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "tests.scope", "1.2.3"
    for fields in spans:
        trace_id, span_id = _ids()
        span = ss.spans.add(
            trace_id=fields.get("trace_id", trace_id),
            span_id=fields.get("span_id", span_id),
            name=fields.get("name", "op"),
            kind=fields.get("kind", 1),
            start_time_unix_nano=fields.get("start", START),
            end_time_unix_nano=fields.get("end", START + 5_000_000),
        )
        for key, value in fields.get("attributes", []):
            set_any_value(span.attributes.add(key=key).value, value)
    return request


def _write(
    chdb_client: Client,
    *requests: ExportTraceServiceRequest,
    source: str = "test/0",
    first_offset: int = 0,
    token: str | None = None,
) -> None:
    sink = ClickHouseSink(chdb_client, "llmops")
    batch = OtlpRecords("otel_traces")
    for offset, request in enumerate(requests, start=first_offset):
        wire = request.SerializeToString()
        batch.append(wire, source, offset, decode_request(wire).span_count)
    sink.write(batch, token or f"otel_traces:test-{next(_counter)}")


def _attributes(chdb_client: Client, service: str) -> list[dict[str, str]]:
    return [
        r[0]
        for r in chdb_client.query(
            "SELECT SpanAttributes FROM otel_traces WHERE ServiceName = {s:String} ORDER BY SpanId",
            parameters={"s": service},
        ).result_rows
    ]


def test_every_value_kind_is_stored_as_the_collector_strings(chdb_client: Client) -> None:
    attributes = [
        ("s", 'héllo "quoted" / line\nbreak'),
        ("empty", ""),
        ("i", -42),
        ("zero", 0),
        ("big", 2**63 - 1),
        ("t", True),
        ("f", False),
        ("d", 1.5),
        ("tenth", 0.1),
        ("huge", 1e20),
        ("raw", b"\x00\xff\x10"),
        ("finish_reasons", ["stop", "length"]),
        ("mixed", ["a/b", 3, True, 2.5, b"\x01"]),
        ("no_items", []),
        ("kv", {"x": 0.1, "y": "z", "n": 7}),
    ]
    _write(chdb_client, _request("svc-kinds", [{"attributes": attributes}]))
    [stored] = _attributes(chdb_client, "svc-kinds")
    assert stored["s"] == 'héllo "quoted" / line\nbreak'
    assert (stored["empty"], stored["i"], stored["zero"], stored["big"]) == ("", "-42", "0", str(2**63 - 1))
    assert (stored["t"], stored["f"]) == ("true", "false")
    assert (stored["d"], stored["tenth"], stored["huge"]) == ("1.5", "0.1", "100000000000000000000")
    assert stored["raw"] == base64.b64encode(b"\x00\xff\x10").decode()
    assert stored["finish_reasons"] == '["stop","length"]'
    assert json.loads(stored["mixed"]) == ["a/b", 3, True, 2.5, base64.b64encode(b"\x01").decode()]
    assert stored["no_items"] == "[]"
    assert json.loads(stored["kv"]) == {"x": 0.1, "y": "z", "n": 7}


def test_values_nested_deeper_than_one_level_are_kept_as_their_raw_bytes(chdb_client: Client) -> None:
    _write(
        chdb_client, _request("svc-deep", [{"attributes": [("matrix", [[1, 2], "x"]), ("tree", {"leaf": {"k": "v"}})]}])
    )
    [stored] = _attributes(chdb_client, "svc-deep")
    inner, scalar = json.loads(stored["matrix"])
    assert scalar == "x"
    assert [v.int_value for v in ArrayValue.FromString(base64.b64decode(inner)).values] == [1, 2]
    leaf = json.loads(stored["tree"])["leaf"]
    assert base64.b64decode(leaf)  # the raw KeyValueList bytes, not lost


def test_a_repeated_key_keeps_its_last_value(chdb_client: Client) -> None:
    _write(
        chdb_client,
        _request(
            "svc-repeat",
            [{"attributes": [("k", "first"), ("other", 1), ("k", "last")]}, {"attributes": [("a", 1), ("b", 2)]}],
        ),
    )
    stored = _attributes(chdb_client, "svc-repeat")
    assert {"k": "last", "other": "1"} in stored and {"a": "1", "b": "2"} in stored


def test_span_fields_resource_scope_events_and_links(chdb_client: Client) -> None:
    request = _request("svc-fields", [], resource={"team": "search", "replicas": 3})
    ss = request.resource_spans[0].scope_spans[0]
    trace_id, span_id = _ids()
    parent = (99).to_bytes(8, "big")
    span = ss.spans.add(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        trace_state="k=v",
        name="chat gpt-4o",
        kind=3,
        start_time_unix_nano=START,
        end_time_unix_nano=START + 1_250_000_000,
    )
    span.status.code, span.status.message = 2, "upstream 500"
    event = span.events.add(time_unix_nano=START + 300_000_000, name="gen_ai.content.completion")
    set_any_value(event.attributes.add(key="chunk").value, 1)
    link = span.links.add(trace_id=(7).to_bytes(16, "big"), span_id=(8).to_bytes(8, "big"), trace_state="a=b")
    set_any_value(link.attributes.add(key="why").value, "retry")
    # Odd values the exporter still writes: unknown kind and status code, end before start.
    ss.spans.add(
        trace_id=_ids()[0],
        span_id=_ids()[1],
        name="odd",
        kind=9,
        start_time_unix_nano=START,
        end_time_unix_nano=START - 1,
    ).status.code = 7
    # A second resource in the same request keeps its own service name.
    second = _request("svc-fields-2", [{"name": "other"}]).resource_spans[0]
    request.resource_spans.append(second)
    _write(chdb_client, request)

    rows = chdb_client.query(
        "SELECT toUnixTimestamp64Nano(Timestamp), TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
        "ServiceName, ResourceAttributes, ScopeName, ScopeVersion, Duration, StatusCode, StatusMessage, "
        "arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name, Events.Attributes, "
        "Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes, _ingest_source, _ingest_offset "
        "FROM otel_traces WHERE ServiceName LIKE 'svc-fields%' ORDER BY SpanName"
    ).result_rows
    by_name = {row[5]: row for row in rows}
    assert set(by_name) == {"chat gpt-4o", "odd", "other"}
    assert by_name["chat gpt-4o"] == (
        START,
        trace_id.hex(),
        span_id.hex(),
        parent.hex(),
        "k=v",
        "chat gpt-4o",
        "SPAN_KIND_CLIENT",
        "svc-fields",
        {"service.name": "svc-fields", "team": "search", "replicas": "3"},
        "tests.scope",
        "1.2.3",
        1_250_000_000,
        "STATUS_CODE_ERROR",
        "upstream 500",
        [START + 300_000_000],
        ["gen_ai.content.completion"],
        [{"chunk": "1"}],
        [(7).to_bytes(16, "big").hex()],
        [(8).to_bytes(8, "big").hex()],
        ["a=b"],
        [{"why": "retry"}],
        "test/0",
        0,
    )
    odd = by_name["odd"]
    assert (odd[3], odd[6], odd[11], odd[12]) == ("", "", 0, "")
    assert by_name["other"][7] == "svc-fields-2"


def test_attributes_of_several_events_and_links_stay_with_their_owner(chdb_client: Client) -> None:
    """The view converts a span's, its events' and its links' attributes in one pass and slices them apart."""
    request = _request("svc-slices", [])
    ss = request.resource_spans[0].scope_spans[0]
    trace_id, span_id = _ids()
    span = ss.spans.add(
        trace_id=trace_id, span_id=span_id, name="sliced", start_time_unix_nano=START, end_time_unix_nano=START + 10
    )
    set_any_value(span.attributes.add(key="own").value, "span")
    event_attrs: list[list[tuple[str, Any]]] = [[("e", 0)], [], [("e", 2), ("dup", "x"), ("dup", "y")]]
    for i, attrs in enumerate(event_attrs):
        event = span.events.add(time_unix_nano=START + i, name=f"event-{i}")
        for key, value in attrs:
            set_any_value(event.attributes.add(key=key).value, value)
    links: list[list[tuple[str, Any]]] = [[("l", "zero")], [("l", "one"), ("n", 1)]]
    for i, link_attrs in enumerate(links):
        link = span.links.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
        for key, value in link_attrs:
            set_any_value(link.attributes.add(key=key).value, value)
    bare_trace, bare_span = _ids()
    ss.spans.add(
        trace_id=bare_trace, span_id=bare_span, name="bare", start_time_unix_nano=START, end_time_unix_nano=START + 10
    )
    _write(chdb_client, request)
    rows = {
        row[0]: row[1:]
        for row in chdb_client.query(
            "SELECT SpanName, SpanAttributes, Events.Name, Events.Attributes, Links.Attributes FROM otel_traces "
            "WHERE ServiceName = 'svc-slices'"
        ).result_rows
    }
    assert rows["sliced"] == (
        {"own": "span"},
        ["event-0", "event-1", "event-2"],
        [{"e": "0"}, {}, {"e": "2", "dup": "y"}],
        [{"l": "zero"}, {"l": "one", "n": "1"}],
    )
    assert rows["bare"] == ({}, [], [], [])


def test_spans_decode_reports_as_problems_are_not_stored(chdb_client: Client) -> None:
    good: dict[str, Any] = {"name": "good"}
    bad: list[dict[str, Any]] = [
        {"name": "zero-trace", "trace_id": bytes(16)},
        {"name": "short-span", "span_id": b"\x01\x02"},
        {"name": "no-start", "start": 0},
    ]
    request = _request("svc-bad", [good, *bad, good])
    decoded = decode_request(request.SerializeToString())
    _write(chdb_client, request)
    stored = chdb_client.query("SELECT SpanName FROM otel_traces WHERE ServiceName = 'svc-bad'").result_rows
    assert len(stored) == decoded.span_count == 2 and {r[0] for r in stored} == {"good"}
    assert len(decoded.problems) == 3


def test_retried_insert_is_dropped_and_fences_follow_the_records(chdb_client: Client) -> None:
    requests = [_request("svc-retry", [{"name": f"s{i}"} for i in range(3)]) for _ in range(4)]
    for _ in range(3):  # the same records with the same token: a retry after a lost reply
        _write(chdb_client, *requests, source="retry/2", first_offset=40, token="otel_traces:retry-token")
    assert chdb_client.query("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-retry'").result_rows[0][0] == 12
    assert ClickHouseSink(chdb_client, "llmops").fences("otel_traces", ["retry/2", "never/0"]) == {
        "retry/2": 43,
        "never/0": -1,
    }


_SCALARS = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(_SCALARS, st.lists(_SCALARS, max_size=5)), min_size=1, max_size=12))
def test_stored_strings_decode_back_to_the_sent_values(chdb_client: Client, values: list[Any]) -> None:
    service = f"svc-prop-{next(_counter)}"
    _write(chdb_client, _request(service, [{"attributes": [(f"k{i}", v) for i, v in enumerate(values)]}]))
    [stored] = _attributes(chdb_client, service)
    for i, value in enumerate(values):
        text = stored[f"k{i}"]
        if isinstance(value, list):
            assert _same(json.loads(text), value), (text, value)
        elif isinstance(value, bool):
            assert text == ("true" if value else "false")
        elif isinstance(value, float):
            assert float(text) == value
        else:
            assert text == str(value)


def _same(decoded: Any, sent: Any) -> bool:
    if isinstance(sent, list):
        return (
            isinstance(decoded, list)
            and len(decoded) == len(sent)
            and all(_same(d, s) for d, s in zip(decoded, sent, strict=True))
        )
    if isinstance(sent, float):
        return not isinstance(decoded, (bool, str)) and float(decoded) == sent  # 1.0 arrives as 1
    return decoded == sent and type(decoded) is type(sent)


# Every dotted attribute name normalize.py knows, marker or not.
_KNOWN_KEYS = sorted(set(re.findall(r'"([a-z_]+(?:\.[a-z_0-9]+)+)"', Path(normalize_module.__file__).read_text())))


@settings(max_examples=300, deadline=None)
@given(
    attributes=st.dictionaries(
        st.sampled_from(_KNOWN_KEYS),
        st.one_of(st.text(max_size=8), st.integers(0, 10**6), st.sampled_from(["chat", "LLM", "gpt-4o"])),
    )
)
def test_spans_the_decoder_skips_are_never_llm_calls(attributes: dict[str, Any]) -> None:
    """The worker builds SpanViews only for spans with a marker key; without one normalize_call is always None."""
    view = SpanView(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="",
        name="x",
        kind=3,
        start_ns=START,
        end_ns=START + 1,
        status_code=0,
        status_message="",
        attributes=attributes,
        resource={"service.name": "s"},
    )
    request = _request("svc-filter", [{"attributes": list(attributes.items())}])
    marked = may_be_llm_call(parse_record(request.SerializeToString()).resource_spans[0].scope_spans[0].spans[0])
    assert marked == bool(LLM_MARKER_KEYS & attributes.keys())
    if not marked:
        assert normalize_call(view) is None


@pytest.fixture(scope="module")
def view_005(chdb_client: Client) -> str:
    """Migration 005's view as first written (with its own otlp_map_last_wins body), into a copy of
    otel_traces fed from a copy of otlp_ingest: the reference migration 006 must match row for row."""
    [m005] = [m for m in available_migrations() if m.version == 5]
    statements = m005.statements()
    last_wins = next(s for s in statements if "FUNCTION IF NOT EXISTS otlp_map_last_wins" in s)
    attributes = next(s for s in statements if "FUNCTION IF NOT EXISTS otlp_attributes" in s)
    view = next(s for s in statements if s.startswith("CREATE MATERIALIZED VIEW"))
    for statement in (
        last_wins.replace("otlp_map_last_wins", "otlp_map_last_wins_005"),
        attributes.replace("otlp_map_last_wins", "otlp_map_last_wins_005").replace(
            "otlp_attributes AS", "otlp_attributes_005 AS"
        ),
    ):
        chdb_client.command(statement)
    chdb_client.command("CREATE TABLE IF NOT EXISTS llmops.otlp_ingest_005 AS llmops.otlp_ingest")
    chdb_client.command("CREATE TABLE IF NOT EXISTS llmops.otel_traces_005 AS llmops.otel_traces")
    select = (
        view.split(" AS\n", 1)[1]
        .replace("otlp_attributes(", "otlp_attributes_005(")
        .replace("FROM otlp_ingest", "FROM llmops.otlp_ingest_005")
    )
    chdb_client.command(f"CREATE MATERIALIZED VIEW IF NOT EXISTS llmops.view_005 TO llmops.otel_traces_005 AS {select}")
    return "otlp_ingest_005"


_KEYS = st.sampled_from(["a", "b", "gen_ai.system", "dup", "x.y"])
_ATTRS = st.lists(
    st.tuples(
        _KEYS,
        st.one_of(
            _SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(st.sampled_from("pq"), _SCALARS, max_size=2)
        ),
    ),
    max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spans=st.lists(
        st.tuples(_ATTRS, st.lists(_ATTRS, max_size=3), st.lists(_ATTRS, max_size=3)), min_size=1, max_size=4
    )
)
def test_migration_006_view_writes_the_rows_of_005(chdb_client: Client, view_005: str, spans: list[Any]) -> None:
    """Spans with repeated keys, nested values, and any number of events and links."""
    service = f"svc-006-{next(_counter)}"
    request = _request(service, [])
    ss = request.resource_spans[0].scope_spans[0]
    for span_attrs, events, links in spans:
        trace_id, span_id = _ids()
        span = ss.spans.add(
            trace_id=trace_id, span_id=span_id, name="s", start_time_unix_nano=START, end_time_unix_nano=START + 1
        )
        for key, value in span_attrs:
            set_any_value(span.attributes.add(key=key).value, value)
        for i, event_attrs in enumerate(events):
            event = span.events.add(time_unix_nano=START + i, name=f"e{i}")
            for key, value in event_attrs:
                set_any_value(event.attributes.add(key=key).value, value)
        for i, link_attrs in enumerate(links):
            link = span.links.add(trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
            for key, value in link_attrs:
                set_any_value(link.attributes.add(key=key).value, value)
    _write(chdb_client, request)
    data = frame_records([request.SerializeToString()], ["test/0"], [0])
    chdb_client.raw_insert(f"llmops.{view_005}", None, data, settings=insert_settings(), fmt="Protobuf")
    query = "SELECT * EXCEPT (_ingest_offset) FROM llmops.{t:Identifier} WHERE ServiceName = {s:String} ORDER BY SpanId"
    new = chdb_client.query(query, parameters={"t": "otel_traces", "s": service}).result_rows
    old = chdb_client.query(query, parameters={"t": "otel_traces_005", "s": service}).result_rows
    assert len(new) == len(spans) and new == old
