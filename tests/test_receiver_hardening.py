"""The receiver under bad input, overload and strangers, on the real receiver process and a real Tansu broker.

Each test counts what reached Kafka (high watermarks of the spans topic), so "refused" also means
"nothing stored": a refused request that left records behind would be stored again by the client's retry.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import uuid
import zlib
from pathlib import Path

import grpc
import pytest
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.config import KafkaSettings
from collector.lag import LagGate, LagProbe
from llmops.broker import EmbeddedBroker, free_port
from llmops.topics import ensure_topics
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

_PROTO = {"Content-Type": "application/x-protobuf"}
_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


_MARKER = b"records_in-marker:"


def records_in(stack) -> int:
    """Records the receiver wrote to the stack's spans topic, counted by reading them back.

    Not from high watermarks: Tansu reports a partition's high watermark as the last batch's base
    offset + 1, so a multi-record batch would be undercounted. A marker record per partition marks
    where this count ends; markers are not counted.
    """
    marker = _MARKER + uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    partitions = producer.list_topics(stack.topic, timeout=10).topics[stack.topic].partitions
    for p in partitions:
        producer.produce(stack.topic, value=marker, partition=p)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {"bootstrap.servers": stack.bootstrap, "group.id": f"{stack.group_id}-count", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(stack.topic, p, OFFSET_BEGINNING) for p in partitions])
    count, open_partitions = 0, set(partitions)
    try:
        for _ in range(600):
            message = consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            value = message.value()
            assert value is not None, "every record here has a value"
            if value == marker:
                open_partitions.discard(message.partition())
                if not open_partitions:
                    return count
            elif not value.startswith(_MARKER):
                count += 1
        raise AssertionError(f"markers not read back from {stack.topic}")
    finally:
        consumer.close()


def _request(service: str, spans: int, attr_bytes: int = 10, big_span_bytes: int = 0) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    sizes = [attr_bytes] * spans + ([big_span_bytes] if big_span_bytes else [])
    for i, size in enumerate(sizes):
        span = ss.spans.add(name=f"op-{i}", trace_id=(i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"))
        span.start_time_unix_nano = 1_764_000_000_000_000_000 + i
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        attr = span.attributes.add()
        attr.key, attr.value.string_value = "payload", "x" * size
    return request


def _grpc_export(port: int, body: bytes, metadata: tuple = ()) -> grpc.RpcError | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            channel.unary_unary(_EXPORT)(body, timeout=20, metadata=metadata)
        except grpc.RpcError as error:
            return error
    return None


# -- section 5: wholly queued or wholly refused; 4xx at once ------------------------------------------


def test_request_with_a_span_too_big_for_a_record_is_refused_whole_and_stores_nothing(make_stack) -> None:
    stack = make_stack(partitions=2, LLMOPS_RECEIVER__MAX_RECORD_BYTES="100000")
    stack.start_receiver()
    # Six 40 kB spans split into three records that fit; the 200 kB span cannot fit in any record.
    body = _request("svc-oversize", 6, attr_bytes=40_000, big_span_bytes=200_000).SerializeToString()
    for _attempt in range(3):  # a client retrying: nothing may pile up
        refused = requests.post(f"{stack.http_url}/v1/traces", data=body, headers=_PROTO, timeout=20)
        assert (
            refused.status_code == 413 and "max_record_bytes" in status_pb2.Status.FromString(refused.content).message
        )
        error = _grpc_export(stack.grpc_port, body)
        assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert records_in(stack) == 0
    fits = _request("svc-oversize", 6, attr_bytes=40_000).SerializeToString()
    assert requests.post(f"{stack.http_url}/v1/traces", data=fits, headers=_PROTO, timeout=20).status_code == 200
    assert records_in(stack) == 3  # the same spans without the big one: split into 3 records, all stored


def test_a_request_whose_records_overflow_the_producer_queue_is_still_queued_whole(make_stack) -> None:
    """librdkafka's queue (1 MiB here) fills on the third of three 400 kB records: the request was admitted
    (nothing else in flight), so the third record waits for room instead of the request being refused
    with two records already queued, which the client's retry would store again."""
    stack = make_stack(
        partitions=1, LLMOPS_RECEIVER__MAX_RECORD_BYTES="400000", LLMOPS_RECEIVER__PRODUCER_QUEUE_MAX_KBYTES="1024"
    )
    stack.start_receiver()
    body = _request("svc-queue", 3, attr_bytes=390_000).SerializeToString()
    response = requests.post(f"{stack.http_url}/v1/traces", data=body, headers=_PROTO, timeout=60)
    assert response.status_code == 200
    assert records_in(stack) == 3


@pytest.fixture(scope="module")
def small_limits(make_stack):
    stack = make_stack(partitions=1, LLMOPS_RECEIVER__MAX_REQUEST_BYTES=str(4 * 1024 * 1024))
    stack.start_receiver()
    return stack


def _nested_kvlist_json(depth: int) -> bytes:
    value = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + '{"stringValue": "x"}' + "}]}}" * depth
    span = (
        '{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "deep", '
        '"attributes": [{"key": "a", "value": %s}]}'
    )
    return ('{"resourceSpans": [{"scopeSpans": [{"spans": [' + span % value + "]}]}]}").encode()


def _gzip_bomb(inflated_bytes: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    return b"".join(deflater.compress(zeros) for _ in range(inflated_bytes >> 20)) + deflater.flush()


_JSON_SPAN = (
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",'
    ' "spanId": "eee19b7ec3c1b174", "name": "s", "kind": %s, "futureField": {"ignored": [1]}}]}]}]}'
)


@pytest.mark.parametrize(
    ("case", "body", "headers", "status"),
    [
        ("JSON nested 300 levels", _nested_kvlist_json(300), {"Content-Type": "application/json"}, 400),
        ("random bytes as gzip", os.urandom(4096), {**_PROTO, "Content-Encoding": "gzip"}, 400),
        (
            "truncated gzip",
            gzip.compress(_request("svc", 3).SerializeToString())[:-8],
            {**_PROTO, "Content-Encoding": "gzip"},
            400,
        ),
        ("unknown enum name", (_JSON_SPAN % '"SERVER?"').encode(), {"Content-Type": "application/json"}, 400),
        ("enum of the wrong type", (_JSON_SPAN % "[2]").encode(), {"Content-Type": "application/json"}, 400),
        ("unknown Content-Encoding", b"x", {**_PROTO, "Content-Encoding": "br"}, 415),
    ],
)
def test_bad_bodies_get_a_4xx_and_store_nothing(
    small_limits, case: str, body: bytes, headers: dict, status: int
) -> None:
    before = records_in(small_limits)
    response = requests.post(f"{small_limits.http_url}/v1/traces", data=body, headers=headers, timeout=20)
    assert response.status_code == status, (case, response.status_code, response.text[:200])
    assert records_in(small_limits) == before
    # The valid twin of the enum cases is accepted: unknown *fields* are still ignored, as OTLP/JSON requires.
    valid = requests.post(
        f"{small_limits.http_url}/v1/traces",
        data=(_JSON_SPAN % "2").encode(),
        headers={"Content-Type": "application/json"},
        timeout=20,
    )
    assert valid.status_code == 200 and records_in(small_limits) == before + 1


def _vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_gzip_bomb_is_refused_without_inflating_it(small_limits) -> None:
    bomb = _gzip_bomb(1 << 30)  # 1 GiB of zeros in ~1 MB: fits the 4 MiB request limit only compressed
    assert len(bomb) < 4 * 1024 * 1024
    before = records_in(small_limits)
    response = requests.post(
        f"{small_limits.http_url}/v1/traces", data=bomb, headers={**_PROTO, "Content-Encoding": "gzip"}, timeout=60
    )
    assert response.status_code == 413
    assert records_in(small_limits) == before
    # Inflating it whole would have taken the receiver's peak RSS past 1 GiB.
    assert _vm_kib(small_limits.receiver.pid, "VmHWM") < 512 * 1024


def test_huge_content_length_is_refused_from_the_header(small_limits) -> None:
    """The body is never sent: the answer must come from the header alone (a wait would hang the test)."""
    with socket.create_connection(("127.0.0.1", small_limits.http_port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 10737418240\r\n\r\n" + b"\0" * 1000
        )
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")


# -- section 4: refuse while the workers are behind ---------------------------------------------------


def _commit_everything(stack) -> None:
    """Catch the worker group up, as a worker does after processing: commit each partition's high watermark."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": stack.group_id, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(stack.topic, timeout=10).topics[stack.topic].partitions
        offsets = []
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(stack.topic, p), timeout=10)
            offsets.append(TopicPartition(stack.topic, p, high))
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def test_lag_over_the_bound_refuses_with_retry_after_and_admits_after_catching_up(make_stack) -> None:
    stack = make_stack(
        partitions=2, LLMOPS_RECEIVER__MAX_CONSUMER_LAG_RECORDS="3", LLMOPS_RECEIVER__LAG_CHECK_INTERVAL_S="0.1"
    )
    stack.start_receiver()  # no worker: nothing consumes, lag grows with every accepted request
    body = _request("svc-lag", 2).SerializeToString()
    statuses: list[int] = []

    def send() -> bool:
        response = requests.post(f"{stack.http_url}/v1/traces", data=body, headers=_PROTO, timeout=20)
        statuses.append(response.status_code)
        send.last = response  # type: ignore[attr-defined]
        return response.status_code == 429

    wait_until(send, 60, "a 429 once the lag passes 3 records")
    refused = send.last  # type: ignore[attr-defined]
    assert set(statuses) == {200, 429} and int(refused.headers["Retry-After"]) >= 1
    stored = records_in(stack)
    # Every accepted request is one record, every refused one none. `stored` may be below the bound + 1: a record
    # accepted while the gate measures is in both the measurement and the gate's own count (it errs toward refusing).
    assert stored == statuses.count(200)
    error = _grpc_export(stack.grpc_port, body)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    details = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert details.details[0].Unpack(info) and info.retry_delay.seconds >= 1
    assert records_in(stack) == stored

    _commit_everything(stack)
    wait_until(
        lambda: requests.post(f"{stack.http_url}/v1/traces", data=body, headers=_PROTO, timeout=20).status_code == 200,
        60,
        "admitted again once the group caught up",
    )
    assert _grpc_export(stack.grpc_port, body) is None


def test_lag_gate_reads_real_lag_and_admits_when_the_broker_is_gone() -> None:
    """Unknown lag (broker unreachable, or a reading gone stale) must not refuse everything forever."""
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(topic="gate_spans", dead_letter_topic="gate_dlq", drift_topic="gate_drift", partitions=1)
        ensure_topics(broker.bootstrap, kafka)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for _ in range(5):  # one record per batch: Tansu's high watermark counts a batch's base offset only
            producer.produce("gate_spans", value=b"x")
            assert producer.flush(10) == 0
        gate = LagGate(
            lambda: LagProbe(broker.bootstrap, "gate-group", "gate_spans"),
            max_records=2,
            interval_s=0.1,
            timeout_s=0.5,
            stale_after_s=1.5,
        )
        gate.start()
        try:
            wait_until(lambda: gate.over_bound() == 5, 30, "lag of 5 measured")
            broker.stop()
            wait_until(lambda: gate.current() is None, 30, "the reading goes stale")
            assert gate.over_bound() is None and gate.reading.error is not None
        finally:
            gate.stop()
    never = LagGate(
        lambda: LagProbe(f"127.0.0.1:{free_port()}", "g", "t"),
        max_records=1,
        interval_s=0.1,
        timeout_s=0.3,
        stale_after_s=1,
    )
    never.start()
    try:
        wait_until(lambda: never.failures >= 1, 30, "a failed measurement")
        assert never.over_bound() is None
    finally:
        never.stop()


# -- section 6: bearer tokens and TLS ------------------------------------------------------------------

_TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def secured(make_stack, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    stack = make_stack(
        partitions=1,
        LLMOPS_RECEIVER__BEARER_TOKENS=f'["other-token", "{_TOKEN}"]',
        LLMOPS_RECEIVER__TLS_CERT_FILE=str(cert),
        LLMOPS_RECEIVER__TLS_KEY_FILE=str(key),
    )
    stack.start_receiver()
    stack.cert = cert
    return stack


def _spans(service: str, n: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("auth-test")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i}"):
            pass
    return memory.get_finished_spans()


def test_sdk_http_exporter_needs_the_token_over_tls(secured, monkeypatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own `verify`
    # (the exporter's certificate_file).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = f"https://127.0.0.1:{secured.http_port}/v1/traces"
    spans = _spans("svc-tls-http", 4)
    before = records_in(secured)
    good = HttpExporter(
        endpoint=url, certificate_file=str(secured.cert), headers={"Authorization": f"Bearer {_TOKEN}"}, timeout=20
    )
    assert good.export(spans) == SpanExportResult.SUCCESS
    assert records_in(secured) == before + 1
    wrong = HttpExporter(
        endpoint=url, certificate_file=str(secured.cert), headers={"Authorization": "Bearer guess"}, timeout=20
    )
    assert wrong.export(spans) == SpanExportResult.FAILURE
    anonymous = requests.post(url, data=b"", headers=_PROTO, verify=str(secured.cert), timeout=20)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port is not served
        requests.post(f"http://127.0.0.1:{secured.http_port}/v1/traces", data=b"", headers=_PROTO, timeout=20)
    assert records_in(secured) == before + 1


def test_sdk_grpc_exporter_needs_the_token_over_tls(secured) -> None:
    endpoint = f"https://127.0.0.1:{secured.grpc_port}"
    credentials = grpc.ssl_channel_credentials(root_certificates=secured.cert.read_bytes())
    spans = _spans("svc-tls-grpc", 4)
    before = records_in(secured)
    good = GrpcExporter(
        endpoint=endpoint, credentials=credentials, headers={"authorization": f"Bearer {_TOKEN}"}, timeout=20
    )
    assert good.export(spans) == SpanExportResult.SUCCESS
    assert records_in(secured) == before + 1
    wrong = GrpcExporter(
        endpoint=endpoint, credentials=credentials, headers={"authorization": "Bearer guess"}, timeout=20
    )
    assert wrong.export(spans) == SpanExportResult.FAILURE
    with (
        grpc.secure_channel(f"127.0.0.1:{secured.grpc_port}", credentials) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        channel.unary_unary(_EXPORT)(ExportTraceServiceRequest().SerializeToString(), timeout=20)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert records_in(secured) == before + 1
