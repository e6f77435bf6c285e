"""Create the pipeline's topics idempotently, and measure consumer lag for draining."""

from __future__ import annotations

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from llmops.config import KafkaSettings

__all__ = ["ensure_topics", "consumer_lag"]


def ensure_topics(bootstrap: str, kafka: KafkaSettings, timeout_s: float = 15.0) -> list[str]:
    """Create otlp_spans, the dead-letter and the drift topics if missing; returns the ones created."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor)
        for name in (kafka.topic, kafka.dead_letter_topic, kafka.drift_topic)
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
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(topic, timeout=timeout_s)
    partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
    request = ConsumerGroupTopicPartitions(group_id, partitions)
    committed = admin.list_consumer_group_offsets([request], request_timeout=timeout_s)[group_id].result(timeout=timeout_s)
    offsets = {tp.partition: tp.offset for tp in committed.topic_partitions}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group_id}-lag-probe", "enable.auto.commit": False})
    try:
        lag = 0
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            done = offsets.get(tp.partition, -1)
            # Tansu can report a high watermark below a committed offset; never count that as negative lag.
            lag += max(0, high - (done if done >= 0 else low))
        return lag
    finally:
        consumer.close()
