"""Async face of an idempotent confluent-kafka producer.

`send` resolves only when Kafka acknowledged every record of a request
(acks=all), so the receiver answers success only for data Kafka holds.

A request is admitted whole or refused whole: the byte budget is checked
before its first record is produced, and a full local queue on the first
record raises QueueFull (nothing of the request was queued; the receiver
answers 429/UNAVAILABLE). Once the first record is queued the rest follow:
a full queue on a later record waits for room (up to the delivery timeout)
instead of refusing a request that is already half in Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from processors.core.errors import RetryableError

__all__ = ["KafkaWriter", "QueueFull", "DeliveryFailed"]

log = logging.getLogger(__name__)


class QueueFull(RetryableError):
    """The producer's local buffer is full: tell the client to retry later."""


class DeliveryFailed(RetryableError):
    """Kafka did not acknowledge a record in time."""


class KafkaWriter:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        queue_max_kbytes: int,
        linger_ms: float,
        max_record_bytes: int,
        delivery_timeout_s: float,
    ) -> None:
        self._topic = topic
        self._delivery_timeout_s = delivery_timeout_s
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": linger_ms,
                "queue.buffering.max.kbytes": queue_max_kbytes,
                "queue.buffering.max.messages": 1_000_000,
                "message.max.bytes": max_record_bytes + 64 * 1024,
                "delivery.timeout.ms": int(delivery_timeout_s * 1000),
                "client.id": "llmops-receiver",
            }
        )
        # Admission is decided per request, before anything is produced, so a request is
        # either wholly queued or wholly refused (a refused request is retried by the
        # client; a half-queued one would be stored twice).
        self._budget = int(queue_max_kbytes * 1024 * 0.9)
        self._inflight = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, values: Sequence[bytes]) -> None:
        """Produce all values; return when all are acknowledged, else raise."""
        if not values:
            return
        size = sum(len(v) for v in values)
        if self._inflight + size > self._budget and self._inflight:
            raise QueueFull(f"{self._inflight} bytes waiting for Kafka")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in values]

        def on_delivery(fut: asyncio.Future) -> Callable[[KafkaError | None, object], None]:
            def callback(err: KafkaError | None, _msg: object) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            return callback

        self._inflight += size  # counted from the start: a request waiting for room holds its place
        try:
            deadline = loop.time() + self._delivery_timeout_s
            for index, (value, fut) in enumerate(zip(values, futures, strict=True)):
                while True:
                    try:
                        self._producer.produce(self._topic, value=value, on_delivery=on_delivery(fut))
                        break
                    except BufferError as exc:
                        if index == 0:
                            raise QueueFull("producer queue is full") from exc
                        if loop.time() > deadline:
                            # Only reachable when Kafka accepts nothing for delivery_timeout_s: the
                            # records already queued may still be stored (see README, delivery guarantees).
                            raise DeliveryFailed(
                                f"producer queue stayed full; {index} of {len(values)} records queued"
                            ) from exc
                        await asyncio.sleep(0.01)  # the delivery thread frees room as Kafka acknowledges
                    except KafkaException as exc:
                        raise DeliveryFailed(str(exc)) from exc
            await asyncio.gather(*futures)
        finally:
            self._inflight -= size

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush what was accepted; returns how many records are still undelivered."""
        remaining = self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)
        return remaining


def _settle(fut: asyncio.Future, err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(DeliveryFailed(str(err)))
