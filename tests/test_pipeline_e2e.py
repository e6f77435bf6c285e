"""End to end on real parts: OTel SDK exporters -> receiver -> Tansu -> faust worker -> chDB."""

from __future__ import annotations

import gzip
import json

import grpc
import pytest
import requests
from confluent_kafka import Consumer, Producer
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from llmops.loadgen import LoadgenOptions, run_loadgen
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _send_with_sdk(exporter, service: str, n_requests: int, model: str) -> dict[str, dict]:
    """Each request: a SERVER span with one LLM CLIENT child. Returns expected LLM rows by span id."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "deployment.environment.name": "test", "team": "qa"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=128, schedule_delay_millis=50))
    tracer = provider.get_tracer("e2e")
    expected: dict[str, dict] = {}
    for i in range(n_requests):
        with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER):
            attrs: dict[str, AttributeValue] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": f"{model}-2024-07-18",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 10 + i % 7,
                "gen_ai.response.finish_reasons": ["stop"],
            }
            with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs) as span:
                if i % 10 == 0:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", "RateLimitError")
                expected[format(span.get_span_context().span_id, "016x")] = {**attrs, "error": i % 10 == 0}
    assert provider.force_flush(30_000)
    provider.shutdown()
    return expected


def _assert_exactly_once(stack, expected_llm: dict[str, dict], service: str) -> None:
    n_spans = 2 * len(expected_llm)
    wait_until(
        lambda: stack.count(f"SELECT count() FROM otel_traces WHERE ServiceName = '{service}'") >= n_spans,
        60,
        "spans stored",
    )
    wait_until(
        lambda: stack.count(f"SELECT count() FROM llm_calls WHERE service = '{service}'") >= len(expected_llm),
        60,
        "calls",
    )
    client = stack.reader()
    assert client.query(
        f"SELECT count(), uniqExact(SpanId) FROM otel_traces WHERE ServiceName = '{service}'"
    ).result_rows[0] == (n_spans, n_spans)
    kinds = dict(
        client.query(
            f"SELECT SpanKind, count() FROM otel_traces WHERE ServiceName = '{service}' GROUP BY SpanKind"
        ).result_rows
    )
    assert kinds == {"SPAN_KIND_SERVER": len(expected_llm), "SPAN_KIND_CLIENT": len(expected_llm)}
    rows = client.query(
        "SELECT span_id, request_model, response_model, provider, operation, input_tokens, output_tokens, status,"
        " error_type,"
        f" environment, team, finish_reason FROM llm_calls WHERE service = '{service}'"
    ).result_rows
    assert len(rows) == len(expected_llm)
    for span_id, req, resp, provider, op, tin, tout, status, error_type, env, team, finish in rows:
        want = expected_llm[span_id]
        assert (req, resp, provider, op) == (
            want["gen_ai.request.model"],
            want["gen_ai.response.model"],
            "openai",
            "chat",
        )
        assert (tin, tout) == (want["gen_ai.usage.input_tokens"], want["gen_ai.usage.output_tokens"])
        assert status == ("error" if want["error"] else "ok")
        assert error_type == ("RateLimitError" if want["error"] else "")
        assert (env, team, finish) == ("test", "qa", "stop")
    attrs = client.query(
        "SELECT SpanAttributes['gen_ai.usage.input_tokens'], ResourceAttributes['team'] FROM otel_traces "
        f"WHERE SpanKind = 'SPAN_KIND_CLIENT' AND ServiceName = '{service}' LIMIT 1"
    ).result_rows[0]
    assert attrs[0].isdigit() and attrs[1] == "qa"
    client.close()


@pytest.fixture
def running(make_stack):
    stack = make_stack(partitions=2, LLMOPS_RECEIVER__MAX_REQUEST_BYTES="300000")
    stack.start_worker()
    stack.start_receiver()
    return stack


def test_sdk_http_and_grpc_exporters_land_exactly_once(running) -> None:
    http_expected = _send_with_sdk(
        HttpExporter(endpoint=f"{running.http_url}/v1/traces"), "svc-http", 300, "gpt-4o-mini"
    )
    grpc_expected = _send_with_sdk(
        GrpcExporter(endpoint=f"127.0.0.1:{running.grpc_port}", insecure=True), "svc-grpc", 300, "gpt-4o-mini"
    )
    _assert_exactly_once(running, http_expected, "svc-http")
    _assert_exactly_once(running, grpc_expected, "svc-grpc")


def _request_with_spans(service: str, n: int, *, bad_span_at: int | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = b"" if i == bad_span_at else (i + 1).to_bytes(8, "big")
        span.name = f"op-{i}"
        span.start_time_unix_nano = 1_764_000_000_000_000_000 + i
        span.end_time_unix_nano = 1_764_000_000_000_000_000 + i + 1000
    return request


def test_json_gzip_accepted_and_bad_requests_rejected_without_disturbing(running) -> None:
    url = f"{running.http_url}/v1/traces"
    document = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc-json"}}]},
            "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
                {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "json-span",
                 "kind": 2, "startTimeUnixNano": "1764000000000000000", "endTimeUnixNano": "1764000000500000000",
                 "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}]}]}],
        }]
    }  # fmt: skip
    ok = requests.post(url, data=json.dumps(document), headers={"Content-Type": "application/json"}, timeout=10)
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("application/json")
    proto = _request_with_spans("svc-gzip", 20).SerializeToString()
    ok = requests.post(
        url,
        data=gzip.compress(proto),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        timeout=10,
    )
    assert ok.status_code == 200

    bad = requests.post(
        url, data=b"\x0a\xff\xff\xff\x0f garbage", headers={"Content-Type": "application/x-protobuf"}, timeout=10
    )
    assert bad.status_code == 400
    bad = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert bad.status_code == 400 and "JSON" in bad.json()["message"]
    big = requests.post(url, data=b"\x00" * 400_000, headers={"Content-Type": "application/x-protobuf"}, timeout=10)
    assert big.status_code == 413
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.RpcError) as failure:
            export(b"\x0a\xff\xff\xff\x0f garbage", timeout=10)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The stack still works after all that, and the bad span inside a good batch is an ingest error.
    mixed = _request_with_spans("svc-mixed", 10, bad_span_at=3).SerializeToString()
    assert (
        requests.post(url, data=mixed, headers={"Content-Type": "application/x-protobuf"}, timeout=10).status_code
        == 200
    )
    wait_until(
        lambda: running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-mixed'") == 9, 60, "mixed batch"
    )
    # otel_traces is written while the other tables' rows are built: the error row follows shortly.
    wait_until(
        lambda: running.count("SELECT count() FROM ingest_errors WHERE service = 'svc-mixed'") >= 1,
        60,
        "mixed batch error",
    )
    wait_until(
        lambda: running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-gzip'") >= 20, 60, "gzip spans"
    )
    wait_until(
        lambda: running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-json'") >= 1, 60, "json span"
    )
    assert running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-gzip'") == 20
    client = running.reader()
    json_row = client.query(
        "SELECT TraceId, SpanId, SpanKind, Duration, SpanAttributes['http.method'] FROM otel_traces "
        "WHERE ServiceName = 'svc-json'"
    ).result_rows
    assert json_row == [
        ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "SPAN_KIND_SERVER", 500_000_000, "GET")
    ]
    errors = client.query(
        "SELECT stage, reason, service, dead_lettered FROM ingest_errors WHERE service = 'svc-mixed'"
    ).result_rows
    assert errors == [("span", "invalid span_id (need 8 non-zero bytes)", "svc-mixed", False)]
    client.close()


def test_poison_record_is_dead_lettered_and_processing_continues(running) -> None:
    producer = Producer({"bootstrap.servers": running.bootstrap})
    producer.produce(running.topic, value=b"\xff\xfe this is not protobuf", partition=0)
    producer.produce(running.topic, value=_request_with_spans("svc-after-poison", 5).SerializeToString(), partition=0)
    assert producer.flush(10) == 0
    wait_until(
        lambda: running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-after-poison'") == 5,
        60,
        "spans after poison",
    )
    wait_until(
        lambda: running.count("SELECT count() FROM ingest_errors WHERE stage = 'decode'") >= 1, 60, "poison recorded"
    )
    client = running.reader()
    rows = client.query(
        "SELECT stage, kafka_partition, dead_lettered, payload_bytes FROM ingest_errors WHERE stage = 'decode'"
    ).result_rows
    assert rows == [("decode", 0, True, len(b"\xff\xfe this is not protobuf"))]
    client.close()
    consumer = Consumer(
        {
            "bootstrap.servers": running.bootstrap,
            "group.id": "dlq-check",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([running.dead_letter_topic])
    message = None
    deadline_polls = 100
    while message is None and deadline_polls:
        message = consumer.poll(0.5)
        deadline_polls -= 1
    consumer.close()
    assert message is not None and message.error() is None
    assert message.value() == b"\xff\xfe this is not protobuf"
    raw_headers = message.headers()
    assert isinstance(raw_headers, list), raw_headers
    headers = dict(raw_headers)
    error = headers["llmops.error"]
    assert (
        headers["llmops.source.topic"] == running.topic.encode()
        and isinstance(error, bytes)
        and b"ExportTraceServiceRequest" in error
    )


def test_record_clickhouse_refuses_is_bisected_out_and_dead_lettered(running) -> None:
    """Python's parser accepts an unknown *group* field; ClickHouse's Protobuf reader does not (code 444).

    The batch insert fails as bad data, is bisected down to that record, which goes to the dead-letter
    topic and to ingest_errors (stage 'sink'); its neighbours in the same partition are stored.
    """
    refused = (
        _request_with_spans("svc-refused", 2).SerializeToString() + b"\xa3\x01\x08\x01\xa4\x01"
    )  # field 20 as a group
    ExportTraceServiceRequest.FromString(refused)  # the worker's own parser accepts it
    producer = Producer({"bootstrap.servers": running.bootstrap})
    for value in (
        _request_with_spans("svc-beside-refused", 3).SerializeToString(),
        refused,
        _request_with_spans("svc-beside-refused-2", 4).SerializeToString(),
    ):
        producer.produce(running.topic, value=value, partition=1)
    assert producer.flush(10) == 0
    wait_until(
        lambda: running.count("SELECT count() FROM ingest_errors WHERE stage = 'sink'") == 1,
        60,
        "refused record recorded",
    )
    wait_until(
        lambda: running.count("SELECT count() FROM otel_traces WHERE ServiceName LIKE 'svc-beside-refused%'") == 7,
        60,
        "neighbours",
    )
    assert running.count("SELECT count() FROM otel_traces WHERE ServiceName = 'svc-refused'") == 0
    client = running.reader()
    [(reason, partition, dead_lettered, size)] = client.query(
        "SELECT reason, kafka_partition, dead_lettered, payload_bytes FROM ingest_errors WHERE stage = 'sink'"
    ).result_rows
    client.close()
    assert (
        reason.startswith("otel_traces: ")
        and "444" in reason
        and (partition, dead_lettered, size) == (1, True, len(refused))
    )
    consumer = Consumer(
        {
            "bootstrap.servers": running.bootstrap,
            "group.id": "dlq-check-sink",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([running.dead_letter_topic])
    values = []
    for _ in range(100):
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
            if refused in values:
                break
    consumer.close()
    assert refused in values


def test_killed_worker_restarts_without_loss_or_duplicates(make_stack) -> None:
    stack = make_stack(partitions=3, LLMOPS_PROCESSOR__BATCH_MAX_RECORDS="2")
    stack.start_worker()
    stack.start_receiver()
    summary = run_loadgen(LoadgenOptions(endpoint=stack.http_url, count=3000, seed=7, max_export_batch_size=64))
    assert summary.complete
    # Kill the worker (no graceful commit) once part of the stream is stored.
    wait_until(lambda: stack.count("SELECT count() FROM otel_traces") > 500, 60, "first rows")
    stack.stop_worker(kill=True)
    stack.start_worker()
    wait_until(
        lambda: stack.count("SELECT count() FROM otel_traces") >= summary.spans_acknowledged,
        120,
        "all spans after restart",
    )
    wait_until(
        lambda: stack.count("SELECT count() FROM llm_calls") >= summary.llm_spans_acknowledged,
        60,
        "all calls after restart",
    )
    wait_until(
        lambda: stack.count("SELECT sum(calls) FROM llm_usage_1m") >= summary.llm_spans_acknowledged,
        60,
        "all usage after restart",
    )
    client = stack.reader()
    total, unique = client.query("SELECT count(), uniqExact(SpanId) FROM otel_traces").result_rows[0]
    assert total == unique == summary.spans_acknowledged
    calls, unique_calls = client.query("SELECT count(), uniqExact(span_id) FROM llm_calls").result_rows[0]
    assert calls == unique_calls == summary.llm_spans_acknowledged
    # Additive windows are not double counted either: their totals equal the per-call sums.
    usage_calls = client.query("SELECT sum(calls) FROM llm_usage_1m").result_rows[0][0]
    assert usage_calls == summary.llm_spans_acknowledged
    client.close()


def test_sql_endpoint_speaks_clickhouse_http_and_refuses_writes(running) -> None:
    base = f"http://127.0.0.1:{running.sql_port}/"
    answer = requests.get(base, params={"query": "SELECT 1 AS one, 'a' AS s FORMAT JSONEachRow"}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"one": 1, "s": "a"}
    answer = requests.post(
        base, params={"default_format": "CSV"}, data="SELECT count() FROM llmops.otel_traces", timeout=10
    )
    assert answer.status_code == 200 and answer.text.strip().isdigit()
    answer = requests.get(base, params={"query": "SELECT {n:UInt8} + 1", "param_n": "41"}, timeout=10)
    assert answer.text.strip() == "42"
    for statement in ("DROP TABLE llmops.otel_traces", "INSERT INTO llmops.ingest_errors (stage) VALUES ('x')"):
        refused = requests.post(base, data=statement, timeout=10)
        assert refused.status_code == 403 and "read-only" in refused.text
    refused = requests.post(base, data="SELECT 1; DROP TABLE llmops.otel_traces", timeout=10)
    assert refused.status_code == 400 and "Multi-statements are not allowed" in refused.text
    # Table functions are refused on the engine's parse (tests/test_sql_endpoint_security.py has the rest).
    refused = requests.get(base, params={"query": "SELECT * FROM file('/etc/hostname')"}, timeout=10)
    assert refused.status_code == 403 and "READONLY" in refused.text
    assert running.count("SELECT count() FROM system.tables WHERE database = 'llmops' AND name = 'otel_traces'") == 1
