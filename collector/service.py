"""`llmops receive`: the OTLP receiver as a process, until SIGINT/SIGTERM, then a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from collector.config import KafkaSettings, ReceiverSettings
from collector.kafka_writer import KafkaWriter
from collector.lag import LagGate, LagProbe
from collector.receiver import OtlpReceiver

__all__ = ["run_receiver", "make_receiver"]

log = logging.getLogger(__name__)


def make_receiver(r: ReceiverSettings, kafka: KafkaSettings, bootstrap: str) -> OtlpReceiver:
    writer = KafkaWriter(
        bootstrap,
        kafka.topic,
        queue_max_kbytes=r.producer_queue_max_kbytes,
        linger_ms=r.producer_linger_ms,
        max_record_bytes=r.max_record_bytes,
        delivery_timeout_s=r.delivery_timeout_s,
    )
    lag_gate = LagGate(
        lambda: LagProbe(bootstrap, kafka.group_id, kafka.topic),
        max_records=r.max_consumer_lag_records,
        interval_s=r.lag_check_interval_s,
        timeout_s=r.lag_check_timeout_s,
        stale_after_s=r.lag_stale_after_s,
    )
    return OtlpReceiver(r, writer, lag_gate)


async def _serve(receiver_settings: ReceiverSettings, kafka: KafkaSettings, bootstrap: str) -> None:
    receiver = make_receiver(receiver_settings, kafka, bootstrap)
    await receiver.start()
    # One line on stdout that a supervisor can wait for.
    print(f"receiver ready http={receiver.http_port} grpc={receiver.grpc_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await receiver.stop()
    log.info(
        "receiver stopped",
        extra={"requests": receiver.stats.requests, "spans": receiver.stats.spans, "rejected": receiver.stats.rejected},
    )


def run_receiver(receiver: ReceiverSettings, kafka: KafkaSettings, bootstrap: str) -> int:
    asyncio.run(_serve(receiver, kafka, bootstrap))
    return 0
