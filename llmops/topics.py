"""Create the pipeline's topics idempotently, and measure consumer lag for draining."""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from collector.config import KafkaSettings
from collector.lag import LagProbe

__all__ = ["ensure_topics", "consumer_lag"]


def ensure_topics(bootstrap: str, kafka: KafkaSettings, timeout_s: float = 15.0) -> list[str]:
    """Create otlp_spans, the dead-letter, drift and agent-span topics if missing; returns the ones created."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor)
        for name in (kafka.topic, kafka.dead_letter_topic, kafka.drift_topic, kafka.agent_topic)
        if name not in existing
    ]
    created = []
    if wanted:
        for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    return created


def consumer_lag(bootstrap: str, group_id: str, topic: str, timeout_s: float = 10.0) -> int:
    """Records in `topic` not yet committed by `group_id` (what a drain waits for)."""
    probe = LagProbe(bootstrap, group_id, topic)
    try:
        return probe.measure(timeout_s)
    finally:
        probe.close()
