"""Backpressure on the workers' backlog: refuse new spans while the worker group is too far behind.

`LagGate` caches the lag the request path reads; `LagProbe` measures it on the broker.

The receiver's own producer queue only fills when Kafka is slow; when the
workers are slow, Kafka keeps accepting and the backlog (and, with the embedded
memory broker, its memory) grows without bound. So the receiver also refuses
(429 / UNAVAILABLE, retryable) while the consumer lag of the worker group on
the spans topic is over `receiver.max_consumer_lag_records`.

Why records: Kafka exposes lag in records cheaply (committed offsets vs high
watermarks, two small requests); it has no byte offsets, and lag in seconds
needs a fetch of the oldest unprocessed record per partition. A record holds
one request (or a part of one) of at most `receiver.max_record_bytes`, so the
record bound is also a byte ceiling: bound x max_record_bytes.

Lag is measured by a background thread every `lag_check_interval_s`, each
broker call bounded by `lag_check_timeout_s`; the request path reads the cached
number and never waits on Kafka. A reading older than `lag_stale_after_s`
(broker unreachable, group offsets not readable) counts as unknown, and unknown
lag admits: a probe failure must not turn into refusing everything forever,
and the producer's own bounded queue and delivery timeout still refuse when
Kafka itself is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

__all__ = ["LagGate", "LagProbe", "LagReading"]

log = logging.getLogger(__name__)


class _Probe(Protocol):
    def measure(self, timeout_s: float) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LagReading:
    records: int | None  # None until the first successful measurement
    measured_at: float  # time.monotonic() of that measurement
    error: str | None = None  # why the latest attempt failed, if it did
    produced_before: int = 0  # this receiver's record count when that measurement started


class LagGate:
    """Caches the worker group's lag; `over_bound()` is what the request path asks."""

    def __init__(
        self,
        probe_factory: Callable[[], _Probe],
        *,
        max_records: int,
        interval_s: float,
        timeout_s: float,
        stale_after_s: float,
    ) -> None:
        self._probe_factory = probe_factory
        self.max_records = max_records
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._stale_after_s = stale_after_s
        self.reading = LagReading(None, 0.0)
        self.failures = 0
        self._produced = 0  # records this receiver queued; written by the event loop, read by the probe thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.max_records <= 0 or self._thread is not None:
            return  # 0 = off
        self._thread = threading.Thread(target=self._run, name="lag-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout_s * 4 + 1)
            self._thread = None

    def note_produced(self, records: int) -> None:
        """Count records this receiver queued, so the estimate moves before the next measurement."""
        self._produced += records

    def current(self) -> int | None:
        """Records of lag (the last measurement plus this receiver's records since), or None when unknown."""
        reading = self.reading
        if reading.records is None or time.monotonic() - reading.measured_at > self._stale_after_s:
            return None
        return reading.records + (self._produced - reading.produced_before)

    def over_bound(self) -> int | None:
        """The lag when it is over the bound (refuse), else None (admit; also when unknown or off)."""
        if self.max_records <= 0:
            return None
        lag = self.current()
        return lag if lag is not None and lag > self.max_records else None

    def _run(self) -> None:
        probe = self._probe_factory()
        try:
            while not self._stop.is_set():
                produced_before = self._produced
                try:
                    records = probe.measure(self._timeout_s)
                    self.reading = LagReading(records, time.monotonic(), produced_before=produced_before)
                except Exception as exc:  # noqa: BLE001 - any probe failure means "unknown", never a crash
                    self.failures += 1
                    previous = self.reading
                    self.reading = LagReading(
                        previous.records, previous.measured_at, f"{type(exc).__name__}: {exc}", previous.produced_before
                    )
                    if self.failures == 1 or self.failures % 60 == 0:
                        log.warning("cannot measure consumer lag (%s); unknown lag admits requests", exc)
                self._stop.wait(self._interval_s)
        finally:
            probe.close()


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
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"{group_id}-lag-probe", "enable.auto.commit": False}
        )

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
