"""Faults on the production path: the built Collector (collector/otelcol.yaml) in front of Apache Kafka.

- A three-node cluster (replication factor 3, min.insync.replicas 2): the leader of an otlp_spans partition is
  killed with SIGKILL in the middle of a stream, twice; then a worker joins and one leaves (a rebalance).
- One node stopped for 30 s while clients keep sending: the collector's sending queue and retries carry the spans.

In both, nothing the collector acknowledged to the SDK is lost and nothing is stored twice:
count() = uniqExact(SpanId) = spans the SDK exported, over the stores of every worker that ran.
"""

from __future__ import annotations

import threading
import time

import pytest

from llmops.loadgen import LoadgenOptions, LoadgenSummary, run_loadgen
from tests.conftest import Stack, wait_until
from tests.kafka_cluster import KafkaCluster
from tests.otelcol_process import Collector
from tests.production_path import (
    START_NS,
    count_all,
    duplicate_origins,
    kafka_stack,
    more_worker,
    send,
    stored_span_ids,
)

pytestmark = [pytest.mark.integration, pytest.mark.production_path]

TOPIC = "otlp_spans"  # the topic collector/otelcol.yaml writes


class Stream:
    """OTLP traffic to the collector from a thread until stopped: 2-second runs at 10 LLM calls/s (about 40 spans/s),
    each with its own seed; throttled so the three JVMs and three workers keep the two cores."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.summaries: list[LoadgenSummary] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-stream", daemon=True)

    def _run(self) -> None:
        seed = 1000
        while not self._stop.is_set():
            seed += 1
            self.summaries.append(
                run_loadgen(
                    LoadgenOptions(
                        endpoint=self.endpoint,
                        rate=10,
                        duration_s=2,
                        seed=seed,
                        start_ns=START_NS,
                        max_export_batch_size=32,
                        stop_on_failure=False,
                    )
                )
            )

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    @property
    def acknowledged(self) -> int:
        return sum(s.spans_acknowledged for s in self.summaries)


def _progress(stacks: list[Stack], what: str) -> None:
    """Wait until the workers store more spans than now: the stream is flowing at this point."""
    before = count_all(stacks, "SELECT count() FROM otel_traces")
    wait_until(lambda: count_all(stacks, "SELECT count() FROM otel_traces") > before, 120, what)


def _known_leader(cluster: KafkaCluster, timeout_s: float = 60) -> int:
    """The partition's leader, from the read that found it: a second read could see an election (-1)."""
    deadline = time.monotonic() + timeout_s
    while (leader := cluster.partition_leader(TOPIC, 0)) < 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for a known leader")
        time.sleep(0.1)
    return leader


def _members(cluster: KafkaCluster, group_id: str) -> int:
    """Members holding partitions, or -1 while the group cannot be described (its coordinator just moved)."""
    try:
        group = cluster.admin().describe_consumer_groups([group_id])[group_id].result(timeout=10)
    except Exception:
        return -1
    return sum(1 for member in group.members if member.assignment.topic_partitions)


def test_leader_killed_twice_then_rebalance_loses_and_duplicates_nothing(
    apache_kafka_3: KafkaCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = apache_kafka_3
    # 6 partitions, not 4: faust's assignor is sticky and fills each worker up to ceil(partitions / workers), so a
    # third worker joining two that hold 2 of 4 partitions each would get none (seen here on Apache Kafka).
    first = kafka_stack(cluster, tmp_path_factory, TOPIC, partitions=6)
    second, third = more_worker(first, "b"), more_worker(first, "c")
    workers = [first, second, third]
    collector = Collector(cluster.bootstrap, log=tmp_path_factory.mktemp("otelcol") / "otelcol.log")
    try:
        first.start_worker()
        second.start_worker()
        collector.start()
        with Stream(collector.http_url) as stream:
            _progress(workers[:2], "first spans stored")
            for round_ in (1, 2):
                leader = cluster.node(_known_leader(cluster))
                cluster.kill(leader)

                def leader_moved(old: int = leader.node_id) -> bool:
                    return cluster.partition_leader(TOPIC, 0) not in (old, -1)

                wait_until(leader_moved, 60, f"new leader (kill {round_})")
                _progress(workers[:2], f"spans stored with node {leader.node_id} down")
                cluster.restart(leader)
                cluster.wait_in_sync(TOPIC)
            third.start_worker()  # joins the group: partitions move
            wait_until(lambda: _members(cluster, first.group_id) == 3, 180, "three workers assigned")
            _progress(workers, "spans stored after the join")
            first.stop_worker()  # leaves (graceful): its partitions move again
            wait_until(lambda: _members(cluster, first.group_id) == 2, 180, "two workers assigned")
            _progress(workers, "spans stored after the leave")
        assert all(s.complete for s in stream.summaries), collector.log_tail()
        wait_until(
            lambda: count_all(workers, "SELECT count() FROM otel_traces") >= stream.acknowledged,
            180,
            "every span stored",
        )
        ids = stored_span_ids(workers)
        twice = {span for span, n in ids.items() if n > 1}
        # Which layer wrote a span twice: two Kafka records hold it (producer side) or one record was stored twice.
        assert not twice, (
            f"stored twice (span: records, rows): {duplicate_origins(cluster.bootstrap, TOPIC, workers, twice)}"
        )
        assert sum(ids.values()) == stream.acknowledged and set(ids.values()) == {1}
        assert collector.metric("otelcol_exporter_send_failed_spans") == 0
    finally:
        collector.stop()
        for stack in workers:
            stack.stop()


def test_kafka_down_30s_behind_the_collector(production_parts: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    with KafkaCluster(1) as cluster:
        stack = kafka_stack(cluster, tmp_path_factory, TOPIC, partitions=2)
        collector = Collector(cluster.bootstrap, log=tmp_path_factory.mktemp("otelcol") / "otelcol.log")
        try:
            stack.start_worker()
            collector.start()
            before = send(collector.http_url, 51, 40)
            wait_until(
                lambda: stack.count("SELECT count() FROM otel_traces") == before.spans_acknowledged,
                60,
                "spans before the outage",
            )
            (node,) = cluster.nodes
            cluster.stop_node(node)
            # Clients keep sending for 30 s while the broker is down; the collector accepts into its queue.
            during = run_loadgen(
                LoadgenOptions(endpoint=collector.http_url, rate=8, duration_s=30, seed=52, start_ns=START_NS)
            )
            assert during.complete and during.spans_acknowledged > 0
            assert collector.metric("otelcol_exporter_queue_size") > 0, "spans wait in the collector's queue"
            cluster.restart(node)
            after = send(collector.http_url, 53, 40)
            total = before.spans_acknowledged + during.spans_acknowledged + after.spans_acknowledged
            wait_until(
                lambda: stack.count("SELECT count() FROM otel_traces") >= total,
                240,
                "every span stored after the outage",
            )
            ids = stored_span_ids([stack])
            assert sum(ids.values()) == total and set(ids.values()) == {1}
            assert collector.metric("otelcol_exporter_send_failed_spans") == 0
        finally:
            collector.stop()
            stack.stop()
