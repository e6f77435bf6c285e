"""`llmops receive`: the OTLP receiver as a process, until SIGINT/SIGTERM, then a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from collector.kafka_writer import KafkaWriter
from collector.lag import LagGate
from collector.receiver import OtlpReceiver
from llmops.config import Settings
from llmops.topics import LagProbe

__all__ = ["run_receiver", "make_receiver"]

log = logging.getLogger(__name__)


def make_receiver(settings: Settings, bootstrap: str) -> OtlpReceiver:
    r = settings.receiver
    writer = KafkaWriter(
        bootstrap,
        settings.kafka.topic,
        queue_max_kbytes=r.producer_queue_max_kbytes,
        linger_ms=r.producer_linger_ms,
        max_record_bytes=r.max_record_bytes,
        delivery_timeout_s=r.delivery_timeout_s,
    )
    lag_gate = LagGate(
        lambda: LagProbe(bootstrap, settings.kafka.group_id, settings.kafka.topic),
        max_records=r.max_consumer_lag_records,
        interval_s=r.lag_check_interval_s,
        timeout_s=r.lag_check_timeout_s,
        stale_after_s=r.lag_stale_after_s,
    )
    return OtlpReceiver(r, writer, lag_gate)


async def _serve(settings: Settings, bootstrap: str) -> None:
    receiver = make_receiver(settings, bootstrap)
    await receiver.start()
    # One line on stdout that a supervisor can wait for.
    print(f"receiver ready http={receiver.http_port} grpc={receiver.grpc_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await receiver.stop()
    log.info("receiver stopped", extra={"requests": receiver.stats.requests, "spans": receiver.stats.spans, "rejected": receiver.stats.rejected})


def run_receiver(settings: Settings, bootstrap: str) -> int:
    asyncio.run(_serve(settings, bootstrap))
    return 0
