"""Names for Kafka logs that survive broker restarts and topic re-creation.

A fence `<topic id>/<partition>` changes when a topic is deleted and created
again (offsets restart at 0), so an old fence never hides new records. The
embedded broker keeps topics in memory, so this happens on every `llmops up`.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

__all__ = ["TopicIds"]


class TopicIds:
    def __init__(self, bootstrap: str, timeout_s: float = 10.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._timeout_s = timeout_s
        self._ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def source(self, topic: str, partition: int) -> str:
        return f"{self.topic_id(topic)}/{partition}"

    def topic_id(self, topic: str) -> str:
        with self._lock:
            known = self._ids.get(topic)
        if known is not None:
            return known
        futures = self._admin.describe_topics(TopicCollection([topic]), request_timeout=self._timeout_s)
        description = futures[topic].result(timeout=self._timeout_s)
        topic_id = str(description.topic_id) if description.topic_id is not None else topic
        with self._lock:
            self._ids[topic] = topic_id
        return topic_id

    def partitions(self, topic: str) -> int:
        """The topic's partition count now (a keyed producer that picks partitions itself needs it)."""
        metadata = self._admin.list_topics(topic, timeout=self._timeout_s).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return len(metadata.partitions)

    def forget(self) -> None:
        """Call on partition assignment: the topic may have been re-created."""
        with self._lock:
            self._ids.clear()
