"""No span value can stop or stall the worker (issue 14, section 2).

The poison spans of the issue go through the real batch handler (parse, prepare, chDB sink)
without Kafka, the same steps the worker runs; a property test feeds every attribute the
normaliser, TTFT and the drift signals read with arbitrary OTLP values through the pure
step (`prepare_batch`) and the drift stage's signal extractor.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import processors.core.bounds as bounds
import processors.core.deployment as deployment
import processors.core.normalize as normalize_module
from llmops.config import Settings
from processors.batch_handler import BatchHandler
from processors.core.bounds import BadValue, amount, label, number, token_count
from processors.core.decode import decode_request
from processors.core.drift.signals import SignalOptions, extract_signals
from processors.core.drift.wire import DriftSender, decode_payload
from processors.core.latency import FIRST_CHUNK_EVENTS, TTFT_ATTRIBUTE
from processors.core.pipeline import Poison, SourceRecord, parse_records
from processors.core.prepare import prepare_batch
from processors.stages import build_call_stages
from sinks.clickhouse.writer import ClickHouseSink
from tests.otlp_values_build import set_any_value

START = 1_764_000_000_000_000_000
GOOD = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 20,
}


# -- the readers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (42, 42),
        (10**12, 10**12),
        (42.0, 42),
        ("42", 42),
        (" 42 ", 42),
        ("1e3", 1000),
        ("1.5e1", 15),
        ("0e999", 0),
        ("120.000", 120),
    ],
)
def test_token_counts_in_range_are_read(value: Any, expected: int) -> None:
    assert token_count(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        10**12 + 1,
        2**63 - 1,
        -(2**63),
        1.5,
        math.nan,
        math.inf,
        -0.5,
        True,
        "1e30",
        "1e1000000",
        "-3",
        "12.5",
        "NaN",
        "Infinity",
        "0x10",
        "1_000",
        "\u0663",
        "9" * 41,
        "",
        b"12",
        [1],
        {"a": 1},
    ],
)
def test_token_counts_out_of_range_or_not_integers_are_refused(value: Any) -> None:
    with pytest.raises(BadValue):
        token_count(value)


def test_numeric_text_is_refused_by_length_before_any_parser_reads_it() -> None:
    """What used to cost ~38 s of CPU (int(Decimal("1e1000000"))) is refused by shape or length."""
    with pytest.raises(BadValue, match="not an integer"):
        token_count("1e1000000")
    with pytest.raises(BadValue, match="longer than 40"):
        token_count("1" * 5_000_000)
    with pytest.raises(BadValue, match="longer than 40"):
        amount("0." + "1" * 100)


def test_amounts_are_exact_finite_and_bounded() -> None:
    assert amount("0.00475") == Decimal("0.00475")
    assert amount(0.1) == Decimal("0.1")  # shortest repr, not the binary float
    assert amount(3) == Decimal(3)
    assert amount("1e-20") == Decimal(0)  # below the column's 12 places
    for bad in ("inf", math.nan, -1, "1e13", 10**13, True, "abc"):
        with pytest.raises(BadValue):
            amount(bad)


def test_numbers_and_labels() -> None:
    assert number("0.25", -1, 1, "x") == 0.25 and number(3, 0, 5, "x") == 3.0
    for bad in (math.inf, math.nan, "1e400", 10**400, 6, "", False, [1.0]):
        with pytest.raises(BadValue):
            number(bad, 0, 5, "x")
    assert label("gpt-4o", "m") == "gpt-4o" and label(3, "m") == "3" and label(1.5, "m") == "1.5"
    for wrong in ("m" * 257, [1], {"a": "b"}, b"x", 10**200):
        with pytest.raises(BadValue):
            label(wrong, "m")


# -- the worker's steps on chDB: the issue's poison spans among good ones ---------------------------


_ids = iter(range(1, 1 << 40))


def _span_ids() -> tuple[bytes, bytes]:
    n = next(_ids)
    return n.to_bytes(16, "big"), n.to_bytes(8, "big")


def _request(service: str, spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """A request of `spans`, each {"attributes": {...}, "start": ns, "end": ns, "events": [(name, ns)]}."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    scope = rs.scope_spans.add()
    for fields in spans:
        trace_id, span_id = _span_ids()
        start = fields.get("start", START)
        span = scope.spans.add(
            trace_id=trace_id,
            span_id=span_id,
            name="chat",
            kind=3,
            start_time_unix_nano=start,
            end_time_unix_nano=fields.get("end", START + 2 * 10**9),
        )
        for key, value in fields.get("attributes", GOOD).items():
            set_any_value(span.attributes.add(key=key).value, value)
        for name, time_ns in fields.get("events", ()):
            span.events.add(name=name, time_unix_nano=time_ns)
    return request


def _handle(chdb_client: Client, request: ExportTraceServiceRequest, offset: int) -> list[Poison]:
    """One record through the worker's batch handler (parse, prepare, write) into chDB."""
    dead: list[Poison] = []

    async def dead_letter(item: Poison) -> None:
        dead.append(item)

    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), build_call_stages(Settings()), dead_letter)
    asyncio.run(handler.handle([SourceRecord("otlp_spans", 0, offset, request.SerializeToString(), "bounds-test/0")]))
    return dead


def _count(client: Client, sql: str, service: str) -> int:
    return int(client.query(sql, parameters={"s": service}).result_rows[0][0])


POISON: dict[str, tuple[dict[str, Any], str, bool]] = {
    "start 2**63": ({"start": 2**63}, "start_time_unix_nano ~2**63 outside 2000-01-01..2200-01-01", False),
    "start 2**64-1": ({"start": 2**64 - 1}, "start_time_unix_nano", False),
    "end 2**64-1": ({"end": 2**64 - 1}, "llm call not stored: end_time_unix_nano", True),
    "input '1e30'": (
        {"attributes": {**GOOD, "gen_ai.usage.input_tokens": "1e30"}},
        "llm call not stored: gen_ai.usage.input_tokens: token count '1e30'",
        True,
    ),
    "input '1e1000000'": (
        {"attributes": {**GOOD, "gen_ai.usage.input_tokens": "1e1000000"}},
        "llm call not stored: gen_ai.usage.input_tokens: token count '1e1000000'",
        True,
    ),
    "output nan": (
        {"attributes": {**GOOD, "gen_ai.usage.output_tokens": math.nan}},
        "gen_ai.usage.output_tokens",
        True,
    ),
    "cache read -1": (
        {"attributes": {**GOOD, "gen_ai.usage.cache_read.input_tokens": -1}},
        "gen_ai.usage.cache_read.input_tokens: token count -1 outside 0..10**12",
        True,
    ),
    "total as bytes": (
        {"attributes": {**GOOD, "gen_ai.usage.total_tokens": b"\x01"}},
        "gen_ai.usage.total_tokens",
        True,
    ),
    "input as 20,000 numbers": (  # not decoded: over the array bound (processors/core/otlp_values.py)
        {"attributes": {**GOOD, "gen_ai.usage.input_tokens": [1] * 20_000}},
        "gen_ai.usage.input_tokens: token count of type OverLimit (<array or kvlist of more than 16384 values>)",
        True,
    ),
}


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_span_costs_only_its_own_call(chdb_client: Client, case: str) -> None:
    """One bad span among ten: the nine good calls are stored and priced, the bad one is an
    ingest_errors row naming span and reason, nothing is dead-lettered, otel_traces keeps every
    span whose start time is in the window."""
    fields, reason, in_traces = POISON[case]
    service = f"poison-{case}"
    spans: list[dict[str, Any]] = [{} for _ in range(10)]
    spans[3] = fields
    request = _request(service, spans)
    bad_span_id = request.resource_spans[0].scope_spans[0].spans[3].span_id.hex()

    assert _handle(chdb_client, request, offset=list(POISON).index(case)) == []

    assert _count(chdb_client, "SELECT count() FROM otel_traces WHERE ServiceName = {s:String}", service) == (
        10 if in_traces else 9
    )
    calls = chdb_client.query(
        "SELECT span_id, input_tokens, output_tokens, cost FROM llm_calls WHERE service = {s:String}",
        parameters={"s": service},
    ).result_rows
    assert len(calls) == 9 and bad_span_id not in {row[0] for row in calls}
    assert all(row[1:3] == (100, 20) and row[3] is not None and row[3] > 0 for row in calls)
    errors = chdb_client.query(
        "SELECT stage, span_id, reason, dead_lettered FROM ingest_errors WHERE service = {s:String}",
        parameters={"s": service},
    ).result_rows
    assert len(errors) == 1
    stage, span_id, recorded, dead_lettered = errors[0]
    assert (stage, span_id, dead_lettered) == ("span", bad_span_id, False)
    assert reason in recorded, recorded
    usage = _count(chdb_client, "SELECT sum(calls) FROM llm_usage_1m WHERE service = {s:String}", service)
    assert usage == 9


def test_an_unforeseen_failure_in_one_span_costs_only_that_call(chdb_client: Client) -> None:
    """A bug no bound foresaw (here an enricher that raises on one span's model) must not crash the
    worker or dead-letter the record: that call becomes an ingest_errors row naming the failure,
    the other nine calls and all ten otel_traces rows are stored."""
    service = "unforeseen-failure"
    spans: list[dict[str, Any]] = [{} for _ in range(10)]
    spans[6] = {"attributes": {**GOOD, "gen_ai.request.model": "model-that-trips-a-bug"}}
    request = _request(service, spans)
    bad_span_id = request.resource_spans[0].scope_spans[0].spans[6].span_id.hex()
    stages = build_call_stages(Settings())

    def buggy_enricher(span: Any, call: Any) -> None:
        if call.request_model == "model-that-trips-a-bug":
            raise ZeroDivisionError("a bug in an enricher")

    stages.enrichers.append(buggy_enricher)
    dead: list[Poison] = []

    async def dead_letter(item: Poison) -> None:
        dead.append(item)

    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), stages, dead_letter)
    asyncio.run(handler.handle([SourceRecord("otlp_spans", 0, 0, request.SerializeToString(), "unforeseen-test/0")]))

    assert dead == []
    assert _count(chdb_client, "SELECT count() FROM otel_traces WHERE ServiceName = {s:String}", service) == 10
    calls = chdb_client.query(
        "SELECT span_id FROM llm_calls WHERE service = {s:String}", parameters={"s": service}
    ).result_rows
    assert len(calls) == 9 and bad_span_id not in {row[0] for row in calls}
    errors = chdb_client.query(
        "SELECT span_id, reason FROM ingest_errors WHERE service = {s:String}", parameters={"s": service}
    ).result_rows
    assert [(span_id, "ZeroDivisionError" in reason) for span_id, reason in errors] == [(bad_span_id, True)]


FIELD_LEVEL: dict[str, tuple[dict[str, Any], str, str]] = {
    # A first-chunk event outside the window: the call is stored, ttft_ms NULL.
    "event time 2**64-1": ({"events": [("gen_ai.content.completion.chunk", 2**64 - 1)]}, "ttft_ms", "ttft_ms IS NULL"),
    "ttft inf": ({"attributes": {**GOOD, TTFT_ATTRIBUTE: math.inf}}, TTFT_ATTRIBUTE, "ttft_ms IS NULL"),
    "ttft '1e400'": ({"attributes": {**GOOD, TTFT_ATTRIBUTE: "1e400"}}, TTFT_ATTRIBUTE, "ttft_ms IS NULL"),
    "reported cost 'inf'": (
        {"attributes": {**GOOD, "gen_ai.usage.cost": "inf"}},
        "reported_cost left NULL",
        "reported_cost IS NULL AND cost IS NOT NULL",
    ),
    # A model name too long to be a name: stored empty, so unpriced (cost NULL), never mispriced.
    "model 10k chars": (
        {"attributes": {**GOOD, "gen_ai.request.model": "gpt-4o-mini" + "x" * 10_000}},
        "gen_ai.request.model: request model longer than 256 characters",
        "model = '' AND cost IS NULL",
    ),
    "agent as kvlist": (
        {"attributes": {**GOOD, "gen_ai.agent.name": {"a": 1}}},
        "gen_ai.agent.name: agent of type dict",
        "agent = ''",
    ),
}


@pytest.mark.parametrize("case", list(FIELD_LEVEL))
def test_a_bad_optional_value_leaves_its_field_empty_with_the_reason(chdb_client: Client, case: str) -> None:
    fields, reason, condition = FIELD_LEVEL[case]
    service = f"field-{case}"
    # The good calls are streamed (a first chunk 0.4 s in) report a cost and an agent, so a NULL or empty value
    # singles out the bad one.
    good = {
        "attributes": {**GOOD, "gen_ai.usage.cost": "0.001", "gen_ai.agent.name": "helper"},
        "events": [("gen_ai.content.completion.chunk", START + 4 * 10**8)],
    }
    spans: list[dict[str, Any]] = [good for _ in range(4)]
    spans[1] = fields
    request = _request(service, spans)
    bad_span_id = request.resource_spans[0].scope_spans[0].spans[1].span_id.hex()

    assert _handle(chdb_client, request, offset=100 + list(FIELD_LEVEL).index(case)) == []

    assert _count(chdb_client, "SELECT count() FROM llm_calls WHERE service = {s:String}", service) == 4
    assert (
        _count(chdb_client, "SELECT count() FROM llm_calls WHERE service = {s:String} AND ttft_ms = 400", service) >= 3
    )
    flagged = chdb_client.query(
        f"SELECT span_id FROM llm_calls WHERE service = {{s:String}} AND {condition}", parameters={"s": service}
    ).result_rows
    assert flagged == [(bad_span_id,)]
    errors = chdb_client.query(
        "SELECT span_id, reason FROM ingest_errors WHERE service = {s:String}", parameters={"s": service}
    ).result_rows
    assert len(errors) == 1 and errors[0][0] == bad_span_id
    assert "llm call stored without a value" in errors[0][1] and reason in errors[0][1], errors[0][1]


def test_a_record_whose_spans_cover_more_than_100_partitions_is_stored(chdb_client: Client) -> None:
    """otel_traces is partitioned by day, llm_calls and the aggregates by month; ClickHouse refuses
    an insert touching more than 100 partitions unless told otherwise, and the sink retried that
    as transient until the worker exited: a crash loop from one record whose spans cover 150
    months (or carry 150 absurd start times)."""
    month = 31 * 86_400 * 10**9
    service = "many-months"
    request = _request(service, [{"start": START - i * month, "end": START - i * month + 10**9} for i in range(150)])
    assert _handle(chdb_client, request, offset=200) == []
    assert _count(chdb_client, "SELECT count() FROM otel_traces WHERE ServiceName = {s:String}", service) == 150
    assert _count(chdb_client, "SELECT count() FROM llm_calls WHERE service = {s:String}", service) == 150
    assert _count(chdb_client, "SELECT sum(calls) FROM llm_usage_1m WHERE service = {s:String}", service) == 150
    assert (
        _count(chdb_client, "SELECT uniqExact(toYYYYMM(ts)) FROM llm_calls WHERE service = {s:String}", service) > 100
    )


def test_otel_traces_and_the_worker_apply_the_same_time_window(chdb_client: Client) -> None:
    """The view leaves out exactly the spans decode reports: start times at the window's edges."""
    service = "window-edges"
    starts = [bounds.TIME_MIN_NS - 1, bounds.TIME_MIN_NS, bounds.TIME_MAX_NS - 1, bounds.TIME_MAX_NS, 2**63, 2**64 - 1]
    request = _request(service, [{"start": s, "end": s, "attributes": {"http.method": "GET"}} for s in starts])
    decoded = decode_request(request.SerializeToString())
    assert decoded.span_count == 2 and len(decoded.problems) == 4
    assert _handle(chdb_client, request, offset=201) == []
    stored = chdb_client.query(
        "SELECT toUnixTimestamp64Nano(Timestamp), Duration FROM otel_traces WHERE ServiceName = {s:String} ORDER BY 1",
        parameters={"s": service},
    ).result_rows
    assert stored == [(bounds.TIME_MIN_NS, 0), (bounds.TIME_MAX_NS - 1, 0)]
    assert _count(chdb_client, "SELECT count() FROM ingest_errors WHERE service = {s:String}", service) == 4


# -- property: arbitrary values in every attribute read ---------------------------------------------


def _read_attributes() -> list[str]:
    """Every span attribute the normaliser, TTFT and the drift signals read (resource keys too)."""
    keys = {key for table in normalize_module._ORDERED.values() for candidates in table for key in candidates}
    keys |= set(normalize_module.LLM_MARKER_KEYS)
    options = normalize_module.NormalizeOptions()
    keys |= {*options.team_span_keys, *options.prompt_name_span_keys, *options.prompt_version_span_keys}
    keys |= {"openinference.span.kind", "traceloop.span.kind", "error.type", "llm.request.type", TTFT_ATTRIBUTE}
    signals = SignalOptions()
    keys |= {
        "gen_ai.output.messages", "llm.output_messages.0.message.content", "llm.output_messages.1.message.content",
        "output.value", "gen_ai.completion.0.content", "gen_ai.completion.0.finish_reason", "llm.finish_reason",
        "gen_ai.response.finish_reasons", "embedding.embeddings.0.embedding.vector", *signals.embedding_model_keys,
        "retrieval.documents.0.document.score", "retrieval.documents.1.document.score",
        "retrieval.documents.0.document.id",
    }  # fmt: skip
    keys |= {*deployment.TIER_ATTRIBUTES, "cloud.region", "server.address"}  # what pricing reads
    return sorted(keys)


READ_KEYS = _read_attributes()
RESOURCE_KEYS = ["service.name", "deployment.environment.name", "deployment.environment", "team", "team.name",
                 "llmops.team", "llmops.prompt.version", "cloud.region", "server.address"]  # fmt: skip
# Detection decides whether a span is an LLM call at all; a fuzzed one may make it none.
DETECTION_KEYS = {*normalize_module.LLM_MARKER_KEYS, "openinference.span.kind", "traceloop.span.kind",
                  "gen_ai.operation.name", "llm.request.type",
                  "gen_ai.request.model", "gen_ai.response.model"}  # fmt: skip
TOKEN_KEYS = {key: i for i, key in enumerate(normalize_module._OTEL_KEYS.input_tokens)}

_NUMERIC_TEXT = st.sampled_from([
    "1e30", "1e1000000", "1e-1000000", "-1", "NaN", "-inf", "Infinity", "12.5", "0x10", " 42 ", "1_000", "\u0663",
    "4.2e1", "99999999999999999999999999999999999999999", "0." + "0" * 50 + "1", "1e", ".", "+.5e3", "1e12",
    "1000000000001",
])  # fmt: skip
_HUGE_TEXT = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["9", "a", "[", '{"a":', " "]), st.integers(1_000, 300_000)
)
_SCALARS = st.one_of(
    st.text(max_size=30),
    _NUMERIC_TEXT,
    _HUGE_TEXT,
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-(2**63), 2**63 - 1, 0, 10**12, 10**12 + 1, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.booleans(),
    st.binary(max_size=40),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
        st.builds(lambda x, n: [x] * n, st.sampled_from([0.5, 1, 2**63 - 1, math.nan, "1e30"]), st.integers(0, 40_000)),
    ),
    max_leaves=8,
)
_TIMES = st.one_of(
    st.sampled_from([START, 0, 1, 2**63, 2**64 - 1, bounds.TIME_MAX_NS, bounds.TIME_MIN_NS - 1]),
    st.integers(0, 2**64 - 1),
)
_SPAN = st.fixed_dictionaries(
    {"fuzz": st.dictionaries(st.sampled_from(READ_KEYS), _VALUES, max_size=4)},
    optional={
        "start": _TIMES,
        "end": _TIMES,
        "resource": st.dictionaries(st.sampled_from(RESOURCE_KEYS), _VALUES, max_size=2),
        "events": st.lists(st.tuples(st.sampled_from(sorted(FIRST_CHUNK_EVENTS)), _TIMES), max_size=2),
    },
)


def _token_ok(value: Any) -> bool | None:
    """The contract for a token count, written independently: None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= 10**12
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer() and 0 <= value <= 10**12
    if isinstance(value, str):
        if len(value) > 40 or not re.fullmatch(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,9})?\s*", value):
            return False
        number_ = Decimal(value.strip())  # at most 40 characters
        return number_ == number_.to_integral_value() and 0 <= number_ <= 10**12
    return False


def _record(offset: int, spans: list[dict[str, Any]]) -> tuple[SourceRecord, list[str]]:
    request = ExportTraceServiceRequest()
    ids = []
    for fields in spans:
        rs = request.resource_spans.add()
        set_any_value(rs.resource.attributes.add(key="service.name").value, "prop")
        for key, value in fields.get("resource", {}).items():
            set_any_value(rs.resource.attributes.add(key=key).value, value)
        trace_id, span_id = _span_ids()
        ids.append(span_id.hex())
        span = rs.scope_spans.add().spans.add(
            trace_id=trace_id,
            span_id=span_id,
            name="chat",
            kind=3,
            start_time_unix_nano=fields.get("start", START),
            end_time_unix_nano=fields.get("end", START + 10**9),
        )
        for key, value in {**GOOD, **fields.get("fuzz", {})}.items():
            set_any_value(span.attributes.add(key=key).value, value)
        for name, time_ns in fields.get("events", ()):
            span.events.add(name=name, time_unix_nano=time_ns)
    return SourceRecord("otlp_spans", 0, offset, request.SerializeToString(), "prop/0"), ids


_STAGES = build_call_stages(Settings())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(records=st.lists(st.lists(st.one_of(st.just({}), _SPAN), min_size=1, max_size=6), min_size=1, max_size=3))
def test_arbitrary_values_in_every_attribute_read(
    records: list[list[dict[str, Any]]], monkeypatch_decimal: list[int]
) -> None:
    """No exception escapes the worker's pure step; every good call is stored; every span that is
    no stored call but should be one is in ingest_errors; numeric parsers never see more than
    `MAX_NUMBER_CHARS` characters (the per-span work bound: everything else a span costs is
    linear in its bytes, and a Kafka record is at most ~1 MB)."""
    built = [_record(offset, spans) for offset, spans in enumerate(records)]
    parsed, poison = parse_records([record for record, _ in built])
    assert poison == []
    sender = DriftSender(window_s=900, sample_size=10_000, max_windows=64)
    prepared = prepare_batch(parsed, {}, _STAGES, sender)

    tables = {rows.table: rows for rows in prepared.tables}
    calls = tables["llm_calls"]
    stored = dict(
        zip(
            calls.column("span_id"),
            zip(calls.column("input_tokens"), calls.column("output_tokens"), calls.column("ts"), strict=True),
            strict=True,
        )
    )
    errors = tables["ingest_errors"]
    reasons: dict[str, list[str]] = {}
    for span_id, reason in zip(errors.column("span_id"), errors.column("reason"), strict=True):
        reasons.setdefault(span_id, []).append(reason)

    for (_, ids), spans in zip(built, records, strict=True):
        for span_id, fields in zip(ids, spans, strict=True):
            start_ok = bounds.TIME_MIN_NS <= fields.get("start", START) < bounds.TIME_MAX_NS
            refused = [r for r in reasons.get(span_id, []) if "stored without" not in r]
            if not fields:  # a good span: stored exactly, nothing reported
                assert stored[span_id][:2] == (100, 20) and span_id not in reasons
                continue
            assert not (span_id in stored and refused), (span_id, refused)
            if span_id in reasons and not refused:
                assert span_id in stored  # "stored without a value" names a stored call
            if not start_ok:
                assert span_id not in stored and refused
                continue
            if DETECTION_KEYS.isdisjoint(fields["fuzz"]):  # still an OTel GenAI chat call
                assert span_id in stored or refused, fields
                end = fields.get("end", START)
                if end and not bounds.TIME_MIN_NS <= end < bounds.TIME_MAX_NS:
                    assert span_id not in stored and any("end_time_unix_nano" in r for r in refused)
                    continue
                chosen = next(
                    (
                        fields["fuzz"].get(k, GOOD.get(k))
                        for k in TOKEN_KEYS
                        if fields["fuzz"].get(k, GOOD.get(k)) not in (None, "")
                    ),
                    None,
                )
                if _token_ok(chosen) is False:
                    assert span_id not in stored and any(
                        "gen_ai.usage.input_tokens" in r or "gen_ai.usage.prompt_tokens" in r for r in refused
                    )
    for row in zip(
        *(
            calls.column(name)
            for name in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens", "ts")
        ),
        strict=True,
    ):
        assert (
            all(0 <= n <= 3 * bounds.MAX_TOKENS for n in row[:4]) and bounds.TIME_MIN_NS <= row[4] < bounds.TIME_MAX_NS
        )
    for name in (
        "service",
        "model",
        "request_model",
        "pricing_region",
        "service_tier",
        "response_model",
        "agent",
        "prompt_name",
        "prompt_version",
        "finish_reason",
        "conversation_id",
        "user_id",
        "team",
        "environment",
    ):
        assert all(len(value) <= bounds.MAX_LABEL_CHARS for value in calls.column(name))
    for cost in (*calls.column("cost"), *calls.column("reported_cost")):
        assert cost is None or (cost.is_finite() and 0 <= cost < 10**15)
    for ttft in calls.column("ttft_ms"):
        assert ttft is None or math.isfinite(ttft)

    # The drift stage reads these attributes from the drift records and from the spans themselves.
    for _, payload in prepared.drift:
        for call in decode_payload(payload).calls:
            extract_signals(call["attributes"])
    for record, _ in built:
        for span in decode_request(record.value).spans:
            extract_signals(span.attributes)
    assert max(monkeypatch_decimal, default=0) <= bounds.MAX_NUMBER_CHARS


@contextmanager
def _decimal_text_lengths() -> Iterator[list[int]]:
    """Records the length of every string `processors.core.bounds` hands to Decimal (all numeric text goes there)."""
    seen: list[int] = []
    original = bounds.Decimal

    def recording(value: Any = "0", *args: Any) -> Decimal:
        if isinstance(value, str):
            seen.append(len(value))
        return original(value, *args)

    bounds.Decimal = recording  # type: ignore[assignment,misc]
    try:
        yield seen
    finally:
        bounds.Decimal = original  # type: ignore[misc]


@pytest.fixture(scope="module")
def monkeypatch_decimal() -> Iterator[list[int]]:
    with _decimal_text_lengths() as seen:
        yield seen


def test_extreme_answers_vectors_and_scores_give_absent_signals() -> None:
    attrs = {
        "gen_ai.output.messages": "[" * 100_000,  # json.loads raised RecursionError
        "embedding.embeddings.0.embedding.vector": "[" + "9" * 400 + "]",  # an int beyond float64: OverflowError
        "retrieval.documents.0.document.score": 2**63 - 1,
        "retrieval.documents.1.document.score": math.nan,
        "embedding.model_name": "m" * 1000,
    }
    signals = extract_signals(attrs)
    assert signals.answer_length is None and signals.span_embedding is None and signals.embedding_model == ""
    assert signals.retrieval_documents == 2 and signals.retrieval_score_max is None
    long_vector = {"embedding.embeddings.0.embedding.vector": [0.5] * (bounds.MAX_VECTOR_LEN + 1)}
    assert extract_signals(long_vector).span_embedding is None
    assert extract_signals({"embedding.embeddings.0.embedding.vector": [0.5] * 8}).span_embedding is not None


def test_parsers_see_only_short_text() -> None:
    """The structural bound the property test checks, on the issue's 10-byte and 5-MB inputs."""
    with _decimal_text_lengths() as seen:
        for text in ("1e1000000", "7" * 5_000_000, "12"):
            try:
                token_count(text)
            except BadValue:
                pass
    assert seen == [len("1e1000000"), len("12")]
