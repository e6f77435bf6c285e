"""Create the pipeline's topics idempotently, and measure consumer lag for draining."""

from __future__ import annotations

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from llmops.config import KafkaSettings

__all__ = ["ensure_topics", "consumer_lag", "LagProbe"]


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


class LagProbe:
    """Measures a consumer group's lag on one topic, again and again, with long-lived clients.

    Lag = for each partition, high watermark minus the group's committed offset (the low
    watermark when the group never committed there): records written and not yet processed.
    Every broker call is bounded by the timeout given to `measure`; a failure raises
    KafkaException (or TimeoutError), it never blocks longer.
    """

    def __init__(self, bootstrap: str, group_id: str, topic: str) -> None:
        self._group_id = group_id
        self._topic = topic
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group_id}-lag-probe", "enable.auto.commit": False})

    def measure(self, timeout_s: float) -> int:
        metadata = self._admin.list_topics(self._topic, timeout=timeout_s)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None:
            raise KafkaException(topic.error if topic is not None else f"topic {self._topic} not found")
        partitions = [TopicPartition(self._topic, p) for p in topic.partitions]
        request = ConsumerGroupTopicPartitions(self._group_id, partitions)
        future = self._admin.list_consumer_group_offsets([request], request_timeout=timeout_s)[self._group_id]
        committed = future.result(timeout=timeout_s)
        offsets = {tp.partition: tp.offset for tp in committed.topic_partitions}
        lag = 0
        for tp in partitions:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
            done = offsets.get(tp.partition, -1)
            # Tansu can report a high watermark below a committed offset; never count that as negative lag.
            lag += max(0, high - (done if done >= 0 else low))
        return lag

    def close(self) -> None:
        self._consumer.close()


def consumer_lag(bootstrap: str, group_id: str, topic: str, timeout_s: float = 10.0) -> int:
    """Records in `topic` not yet committed by `group_id` (what a drain waits for)."""
    probe = LagProbe(bootstrap, group_id, topic)
    try:
        return probe.measure(timeout_s)
    finally:
        probe.close()
