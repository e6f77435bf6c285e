"""The production path on real parts: OTel SDK (HTTP and gRPC) -> the OpenTelemetry Collector built from upstream
with collector/otelcol.yaml -> Apache Kafka (one KRaft node) -> two `llmops worker` processes -> chDB.

The same spans (same seed and timeline, so the same ids) also go through the built-in receiver (`llmops receive`)
into their own topic and worker: what both paths store, and the Kafka records both write, must be equal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from llmops.broker import free_port
from llmops.loadgen import LoadgenOptions, LoadgenSummary, run_loadgen
from processors.core.decode import decode_request
from tests.conftest import STORED_SPANS, Stack, endpoint_count, output_after, read_until_banner, wait_until
from tests.kafka_cluster import KafkaCluster
from tests.otelcol_process import Collector
from tests.production_path import count_all, kafka_stack, more_worker, send, stored_rows, stored_span_ids

pytestmark = [pytest.mark.integration, pytest.mark.production_path]

TRAFFIC = (("http/protobuf", 41, 120), ("grpc", 42, 120))  # (protocol, seed, LLM calls)
CALL_COLUMNS = (
    "span_id, trace_id, service, environment, team, provider, request_model, response_model, operation, prompt_name, "
    "prompt_version, agent, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
    "toString(cost), duration_ms, ttft_ms, status, finish_reason, convention"
)
TRACE_COLUMNS = (
    "SpanId, TraceId, ParentSpanId, SpanName, SpanKind, ServiceName, toString(ResourceAttributes), "
    "toString(SpanAttributes), Duration, StatusCode, StatusMessage, toString(Events.Name), toString(Events.Timestamp)"
)


@dataclass
class Paths:
    cluster: KafkaCluster
    collector: Collector
    workers: list[Stack]  # two workers of one group behind the collector
    builtin: Stack  # `llmops receive` and one worker on their own topic
    sent: list[LoadgenSummary]

    @property
    def spans(self) -> int:
        return sum(s.spans_acknowledged for s in self.sent) // 2

    @property
    def llm_spans(self) -> int:
        return sum(s.llm_spans_acknowledged for s in self.sent) // 2


@pytest.fixture(scope="module")
def paths(apache_kafka: KafkaCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    first = kafka_stack(apache_kafka, tmp_path_factory, "otlp_spans", partitions=4)
    workers = [first, more_worker(first, "b")]
    builtin = kafka_stack(apache_kafka, tmp_path_factory, "otlp_spans_builtin", partitions=2)
    collector = Collector(apache_kafka.bootstrap, log=tmp_path_factory.mktemp("otelcol") / "otelcol.log")
    try:
        for stack in workers:
            stack.start_worker()
        builtin.start_worker()
        builtin.start_receiver()
        collector.start()
        sent = []
        for protocol, seed, count in TRAFFIC:
            sent.append(
                send(collector.http_url if protocol != "grpc" else collector.grpc_endpoint, seed, count, protocol)
            )
            sent.append(
                send(
                    builtin.http_url if protocol != "grpc" else f"127.0.0.1:{builtin.grpc_port}", seed, count, protocol
                )
            )
        result = Paths(apache_kafka, collector, workers, builtin, sent)
        wait_until(
            lambda: count_all(workers, "SELECT count() FROM otel_traces") >= result.spans, 120, "collector path stored"
        )
        wait_until(
            lambda: count_all(workers, "SELECT sum(calls) FROM llm_usage_1m") >= result.llm_spans, 60, "collector usage"
        )
        wait_until(
            lambda: builtin.count("SELECT count() FROM otel_traces") >= result.spans, 120, "receiver path stored"
        )
        wait_until(
            lambda: builtin.count("SELECT sum(calls) FROM llm_usage_1m") >= result.llm_spans, 60, "receiver usage"
        )
        yield result
    finally:
        collector.stop()
        for stack in (*workers, builtin):
            stack.stop()


def test_every_span_stored_once_by_two_workers(paths: Paths) -> None:
    ids = stored_span_ids(paths.workers)
    assert sum(ids.values()) == paths.spans and set(ids.values()) == {1}
    # Both workers are members of the group, each with its share of the partitions (the collector's sticky
    # partitioner may still have put this little traffic on one worker's partitions).
    # Polled: right after a rebalance the group can be mid-sync, or its coordinator not answer at once.
    seen: list[list[set[int]] | None] = []
    wait_until(lambda: _two_members_share_all_partitions(seen, paths), 60, "two workers sharing the four partitions")
    assert count_all(paths.workers, "SELECT count() FROM llm_calls") == paths.llm_spans
    assert count_all(paths.workers, "SELECT count() FROM ingest_errors") == 0


def _two_members_share_all_partitions(seen: list[list[set[int]] | None], paths: Paths) -> bool:
    """Each member's partitions of the topic, appended to `seen` (None while the group cannot be described)."""
    worker = paths.workers[0]
    try:
        group = paths.cluster.admin().describe_consumer_groups([worker.group_id])[worker.group_id].result(timeout=10)
    except Exception:
        seen.append(None)
        return False
    shares = [
        {tp.partition for tp in member.assignment.topic_partitions if tp.topic == worker.topic}
        for member in group.members
    ]
    seen.append(shares)
    return len(shares) == 2 and all(shares) and set.union(*shares) == {0, 1, 2, 3}


def test_collector_path_stores_what_the_builtin_receiver_path_stores(paths: Paths) -> None:
    """Costs (exact decimals), TTFT, tokens and every dimension per LLM call; every span's columns in otel_traces."""
    calls = stored_rows(paths.workers, f"SELECT {CALL_COLUMNS} FROM llm_calls")
    assert calls == stored_rows([paths.builtin], f"SELECT {CALL_COLUMNS} FROM llm_calls")
    assert sum(calls.values()) == paths.llm_spans
    assert any(row[17] not in (None, "\\N") and row[17] != "0" for row in calls), "some calls are priced"
    assert any(row[19] is not None for row in calls), "some calls carry a TTFT"
    traces = stored_rows(paths.workers, f"SELECT {TRACE_COLUMNS} FROM otel_traces")
    assert traces == stored_rows([paths.builtin], f"SELECT {TRACE_COLUMNS} FROM otel_traces")
    usage = (
        "SELECT window_start, service, model, sum(calls), sum(input_tokens), toString(sum(cost)) "
        "FROM llm_usage_1m GROUP BY ALL"
    )
    # The two workers' partials add up per window and key to the single worker's.
    assert _sum_partials(stored_rows(paths.workers, usage)) == _sum_partials(stored_rows([paths.builtin], usage))


def _sum_partials(rows: Counter[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[int, int, Decimal]]:
    out: dict[tuple[Any, ...], list] = {}
    for (window, service, model, calls, tokens, cost), n in rows.items():
        acc = out.setdefault((window, service, model), [0, 0, Decimal(0)])
        acc[0] += calls * n
        acc[1] += tokens * n
        acc[2] += Decimal(cost) * n
    return {key: (a, b, c) for key, (a, b, c) in out.items()}


def test_collector_and_receiver_records_decode_identically(paths: Paths) -> None:
    from_collector = _decoded_spans(paths.cluster.bootstrap, paths.workers[0].topic)
    from_receiver = _decoded_spans(paths.cluster.bootstrap, paths.builtin.topic)
    assert len(from_collector) == paths.spans
    assert from_collector == from_receiver


def _decoded_spans(bootstrap: str, topic: str) -> dict[str, object]:
    """Every span of every record in `topic`, decoded by the workers' own decoder, by span id."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"decode-probe-{topic}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        spans: dict[str, object] = {}
        done = {p for p, end in ends.items() if end == 0}
        while len(done) < len(ends):
            message = consumer.poll(10)
            assert message is not None, f"{topic}: no record within 10 s"
            assert message.error() is None, message.error()
            for span in decode_request(message.value()).spans:
                assert span.span_id not in spans, f"span {span.span_id} in two records"
                spans[span.span_id] = span
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None, "a consumed record has both"
            if offset + 1 >= ends[partition]:
                done.add(partition)
        return spans
    finally:
        consumer.close()


def test_up_with_kafka_runs_its_worker_and_receiver_on_apache_kafka(paths: Paths, tmp_path) -> None:
    """`llmops up --kafka` against Apache Kafka: no embedded broker, the children get the Apache Kafka consumer
    timeouts (broker kind `kafka`), and every span acknowledged before Ctrl-C is stored."""
    http, grpc_port, sql = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env |= {
        "LLMOPS_KAFKA__TOPIC": "otlp_spans_up",
        "LLMOPS_KAFKA__DEAD_LETTER_TOPIC": "otlp_spans_up_dlq",
        "LLMOPS_KAFKA__DRIFT_TOPIC": "llm_drift_signals_up",
        "LLMOPS_KAFKA__GROUP_ID": "llmops-up",
    }
    flags = ["--data-dir", str(tmp_path), "--kafka", paths.cluster.bootstrap, "--otlp-http-port", str(http),
             "--otlp-grpc-port", str(grpc_port), "--sql-port", str(sql)]  # fmt: skip
    up = subprocess.Popen([sys.executable, "-m", "llmops", "up", *flags], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        lines = read_until_banner(up)
        assert any(f"kafka={paths.cluster.bootstrap} " in line for line in lines), lines
        children = subprocess.run(["pgrep", "-P", str(up.pid)], capture_output=True, text=True).stdout.split()
        kinds = {}
        for pid in children:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = dict(
                item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
            )
            kinds[next(a.decode() for a in argv if a in (b"worker", b"receive"))] = environ["LLMOPS_KAFKA__BROKER_KIND"]
        assert kinds == {"worker": "kafka", "receive": "kafka"}  # no embedded broker among the children
        summary = run_loadgen(LoadgenOptions(endpoint=f"http://127.0.0.1:{http}", count=400, seed=43))
        assert summary.complete
        wait_until(lambda: endpoint_count(sql, STORED_SPANS) == summary.spans_acknowledged, 120, "spans stored")
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=180) == 0, output_after(up, lines)
    finally:
        if up.poll() is None:
            up.kill()
