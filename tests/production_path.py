"""Helpers shared by the production-path tests: stacks on Apache Kafka, OTLP traffic, and what the stores hold."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

import pytest

from collector.config import KafkaSettings
from llmops.broker import free_port
from llmops.loadgen import LoadgenOptions, LoadgenSummary, run_loadgen
from llmops.topics import ensure_topics
from tests.conftest import Stack
from tests.kafka_cluster import KafkaCluster

__all__ = [
    "START_NS",
    "count_all",
    "duplicate_origins",
    "kafka_stack",
    "more_worker",
    "send",
    "stored_rows",
    "stored_span_ids",
]

START_NS = 1_764_000_000_000_000_000  # a fixed timeline: the same seed gives the same spans, ids included


def kafka_stack(cluster: KafkaCluster, tmp: pytest.TempPathFactory, topic: str, partitions: int, **env: str) -> Stack:
    """A Stack (tests/conftest.py) on Apache Kafka; `topic` is created with the cluster's replication factor."""
    name = uuid.uuid4().hex[:8]
    stack = Stack(
        bootstrap=cluster.bootstrap,
        data_dir=tmp.mktemp(f"kafka-stack-{name}"),
        env_overrides={"LLMOPS_KAFKA__REPLICATION_FACTOR": str(cluster.replication_factor), **env},
        topic=topic,
        dead_letter_topic=f"{topic}_dlq",
        drift_topic=f"{topic}_drift",
        agent_topic=f"{topic}_agents",
        group_id=f"llmops-{name}",
        broker_kind="kafka",
    )
    ensure_topics(
        cluster.bootstrap,
        KafkaSettings(
            topic=stack.topic,
            dead_letter_topic=stack.dead_letter_topic,
            drift_topic=stack.drift_topic,
            agent_topic=stack.agent_topic,
            partitions=partitions,
            replication_factor=cluster.replication_factor,
        ),
    )
    return stack


def more_worker(stack: Stack, suffix: str) -> Stack:
    """Another worker of the same group and topics with its own chDB store (chDB is in-process: one owner per store)."""
    data_dir = stack.data_dir.with_name(f"{stack.data_dir.name}-{suffix}")
    data_dir.mkdir()
    return dataclasses.replace(stack, data_dir=data_dir, sql_port=free_port(), worker=None, receiver=None)


def send(endpoint: str, seed: int, count: int, protocol: str = "http/protobuf", **options: object) -> LoadgenSummary:
    summary = run_loadgen(
        LoadgenOptions(
            endpoint=endpoint,
            protocol=protocol,
            count=count,
            seed=seed,
            start_ns=START_NS,
            max_export_batch_size=64,
            **options,
        )
    )
    assert summary.complete, f"{summary.spans_acknowledged} of {summary.spans_sent} spans acknowledged"
    return summary


def stored_span_ids(stacks: list[Stack]) -> Counter[str]:
    """SpanIds over the stores of several workers; each store also holds no SpanId twice."""
    ids: Counter[str] = Counter()
    for stack in stacks:
        client = stack.reader()
        try:
            count, unique = client.query("SELECT count(), uniqExact(SpanId) FROM otel_traces").result_rows[0]
            assert count == unique, f"{stack.data_dir.name}: {count} rows, {unique} span ids"
            ids.update(row[0] for row in client.query("SELECT SpanId FROM otel_traces").result_rows)
        finally:
            client.close()
    return ids


def stored_rows(stacks: list[Stack], sql: str) -> Counter[tuple[object, ...]]:
    rows: Counter[tuple[object, ...]] = Counter()
    for stack in stacks:
        client = stack.reader()
        try:
            rows.update(tuple(row) for row in client.query(sql).result_rows)
        finally:
            client.close()
    return rows


def count_all(stacks: list[Stack], sql: str) -> int:
    return sum(stack.count(sql) for stack in stacks)


def duplicate_origins(
    bootstrap: str, topic: str, stacks: list[Stack], span_ids: set[str]
) -> dict[str, dict[str, list]]:
    """Where each of `span_ids` lives: the Kafka records (partition, offset) that hold it, read from the beginning of
    `topic`, and the rows (store, _ingest_source, _ingest_offset) that stored it. Tells a producer that wrote a span
    twice (two records) from a sink that stored one record twice (one record, two rows)."""
    from confluent_kafka import Consumer, TopicPartition

    from processors.core.decode import decode_request

    found: dict[str, dict[str, list]] = {span: {"records": [], "rows": []} for span in span_ids}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"diag-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done: set[int] = set()
        while len(done) < len(ends):
            message = consumer.poll(10)
            if message is None:
                break
            if message.error():
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None, "a consumed record has both"
            for span in decode_request(message.value()).spans:
                if span.span_id in found:
                    found[span.span_id]["records"].append((partition, offset, message.timestamp()[1]))
            if offset + 1 >= ends[partition]:
                done.add(partition)
    finally:
        consumer.close()
    for stack in stacks:
        client = stack.reader()
        try:
            rows = client.query(
                "SELECT SpanId, _ingest_source, _ingest_offset FROM otel_traces WHERE SpanId IN {ids:Array(String)}",
                parameters={"ids": sorted(span_ids)},
            ).result_rows
        finally:
            client.close()
        for span, source, offset in rows:
            found[span]["rows"].append((stack.data_dir.name, source, int(offset)))
    return found
