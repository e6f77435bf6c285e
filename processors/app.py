"""The faust app: a thin wire from the `otlp_spans` topic to BatchHandler.

Acknowledgement is the whole point of this module. faust commits only
acknowledged offsets. `take_batches` (processors/batching.py) hands each event
over with one more reference on its message, released only once the batch's
rows are stored, so that the write of batch N can run while batch N+1 is
prepared (`BatchHandler`: prepare, then write, writes in batch order).
faust waits for held messages before a rebalance or shutdown completes
(`stream_wait_empty`). If a write cannot complete (store misconfigured, retries
exhausted) the process exits at once without acknowledging, so the batch is
redelivered on restart and the sink's fences make that redelivery harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC
from typing import Any, NoReturn

import faust
from confluent_kafka import KafkaException

from llmops.config import Settings
from llmops.errors import UserError
from processors.batch_handler import BatchHandler, ReadyBatch
from processors.batching import take_batches
from processors.core.drift.wire import DriftSender
from processors.core.pipeline import Poison, SourceRecord
from processors.kafka_sources import TopicIds
from processors.stages import build_call_stages
from sinks.clickhouse.client import connect
from sinks.clickhouse.errors import SinkError
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink

__all__ = ["create_app", "EXIT_SINK_FAILED"]

log = logging.getLogger(__name__)
EXIT_SINK_FAILED = 70


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """Build the worker app. The store is migrated before the consumer joins its group."""
    kafka = settings.kafka
    app = faust.App(
        kafka.group_id,  # the app id is the consumer group
        broker=f"kafka://{bootstrap.replace(',', ';kafka://')}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=kafka.consumer_session_timeout_s,
        broker_heartbeat_interval=kafka.consumer_heartbeat_interval_s,
        broker_commit_interval=settings.processor.commit_interval_s,
        stream_wait_empty=True,
        # Prefetch at most four batches: OTLP records are ~200 KB each, and faust's default
        # (4,096 events) lets a busy worker buffer most of a GiB ahead of itself.
        stream_buffer_maxsize=4 * settings.processor.batch_max_records,
        datadir=str(settings.data_dir / "faust"),
    )
    client = connect(settings.clickhouse_dsn, settings.clickhouse.database, create_database=True)
    apply_migrations(client, settings.clickhouse.database)
    sink = ClickHouseSink(client, settings.clickhouse.database, retries=settings.clickhouse.insert_retries)
    topic_ids = TopicIds(bootstrap)
    dlq = app.topic(kafka.dead_letter_topic, value_serializer="raw", key_serializer="raw")

    async def dead_letter(item: Poison) -> None:
        record = item.record
        headers = {
            "llmops.error": item.reason.encode()[:1000],
            "llmops.source.topic": record.topic.encode(),
            "llmops.source.partition": str(record.partition).encode(),
            "llmops.source.offset": str(record.offset).encode(),
        }
        fut = await dlq.send(value=record.value, headers=headers)
        await fut

    drift_topic = app.topic(kafka.drift_topic, value_serializer="raw", key_serializer="raw")

    async def publish_drift(payloads: list[tuple[str, bytes]]) -> None:
        futures = [await drift_topic.send(key=service.encode(), value=value) for service, value in payloads]
        for fut in futures:
            await fut

    d = settings.drift
    # Remembers what it sent for two windows per live key: enough to filter, bounded in memory.
    sender = DriftSender(d.window_s, d.reservoir_size, max_windows=2 * d.max_keys)
    agent_topic = app.topic(kafka.agent_topic, value_serializer="raw", key_serializer="raw")

    async def publish_agent_spans(payloads: list[tuple[int, bytes]]) -> None:
        futures = [await agent_topic.send(value=value, partition=partition) for partition, value in payloads]
        for fut in futures:
            await fut

    agent_partitions = _agent_partitions(topic_ids, settings)
    handler = BatchHandler(
        sink,
        build_call_stages(settings, agent_partitions),
        dead_letter,
        (sender, publish_drift) if d.enabled else None,
        publish_agent_spans if settings.agents.enabled else None,
    )
    spans_topic = app.topic(kafka.topic, value_serializer="raw", key_serializer="raw")

    # Next offset to commit per partition: one past the last record whose batch is stored. Batches are written in
    # order, so everything below it is stored too. Committed by `_revoked` (below), because faust does not.
    written: dict[Any, int] = {}

    async def write_then_ack(ready: ReadyBatch, events: list[Any]) -> None:
        try:
            await handler.write(ready)
        except BaseException as exc:  # cancellation mid-write included: never ack what was not written
            _die_unacknowledged(exc, "write")
        for event in events:
            tp, offset = event.message.tp, event.message.offset
            if offset >= written.get(tp, 0):
                written[tp] = offset + 1
            event.ack()  # the reference take_batches took: now faust may commit the offset

    @app.agent(spans_topic, name="otlp_spans_to_clickhouse")
    async def process(stream: Any) -> None:
        writing: asyncio.Future[None] | None = None
        async for events in take_batches(
            stream, settings.processor.batch_max_records, settings.processor.batch_max_wait_s
        ):
            records = [
                SourceRecord(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    value=bytes(e.value or b""),
                    source=topic_ids.source(e.message.topic, e.message.partition),
                )
                for e in events
            ]
            try:
                ready = await handler.prepare(records)  # while the previous batch is written
                if writing is not None:
                    await writing  # writes in batch order: a fence never passes an unwritten batch
            except BaseException as exc:
                _die_unacknowledged(exc, "read")
            writing = asyncio.ensure_future(write_then_ack(ready, events))

    if settings.drift.enabled:
        _add_drift_stage(app, settings, drift_topic, sink)

    if settings.agents.enabled:
        _add_agent_run_stage(app, settings, bootstrap, sink)

    if settings.processor.budgets_file is not None:
        _add_budget_timer(app, settings, client, sink)

    @app.on_before_shutdown.connect
    async def _report(*_: Any, **__: Any) -> None:
        stats = handler.stats
        log.info(
            "worker stopping",
            extra={
                "records": stats.records,
                "spans": stats.spans,
                "calls": stats.calls,
                "dead_lettered": stats.dead_lettered,
                "already_stored_records": stats.skipped_records,
                "rows_written": sink.rows_written,
            },
        )

    # faust types a handler as (sender, *args, signal=..., **kwargs); it sends the partitions as the one
    # positional argument.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        sink.forget_fences()
        topic_ids.forget()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as on_partitions_assigned above
    async def _revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        """Commit what this worker stored of the partitions it gives up, before the group moves them.

        faust 0.15.3 drops its acknowledgement bookkeeping of revoked partitions (Consumer.on_partitions_revoked)
        before its own commit at revocation, so what it acknowledged since its last commit
        (`processor.commit_interval_s`) may stay uncommitted, and the next owner reads it again. The fences skip it
        in a store the workers share; a store of its own stored it a second time (one chDB per worker:
        tests/test_production_faults.py). The signal is sent after faust waited for every batch in progress to be
        written (`stream_wait_empty`).
        """
        offsets = {tp: written.pop(tp) for tp in revoked if tp in written}
        if not offsets:
            return
        try:
            # faust's own path to the consumer thread's commit; private, so not on the ConsumerT interface
            committed = await app.consumer._commit(offsets)  # type: ignore[attr-defined]
        except Exception as exc:  # the group moved on without us: the next owner reads them again
            committed = False
            log.debug("commit at revocation failed", exc_info=exc)
        if not committed:
            log.warning(
                "offsets of revoked partitions not committed; their next owner reads these records again",
                extra={"offsets": {f"{tp.topic}/{tp.partition}": offset for tp, offset in offsets.items()}},
            )

    return app


def _add_drift_stage(app: faust.App, settings: Settings, drift_topic: Any, sink: ClickHouseSink) -> None:
    """Second stage: drift records arrive keyed by service, so one worker owns each service's windows."""
    from processors.core.drift.stream import DriftStageConfig, DriftTracker
    from processors.drift.stage import DriftStage

    d = settings.drift
    config = DriftStageConfig(
        window_s=d.window_s,
        lateness_s=d.lateness_s,
        idle_close_s=d.idle_close_s,
        reservoir_size=d.reservoir_size,
        max_keys=d.max_keys,
        history_windows=d.history_windows,
        key_fields=tuple(d.key_fields),
        change_persist_s=d.change_persist_s,
        change_min_share=d.change_min_share,
    )
    stage = DriftStage(DriftTracker(config), sink)

    @app.agent(drift_topic, name="drift_windows")
    async def drift_windows(stream: Any) -> None:
        async for events in take_batches(stream, 256, settings.processor.batch_max_wait_s):
            try:
                await stage.consume([bytes(e.value or b"") for e in events])
            except SinkError as exc:
                _die(f"drift rows could not be written, exiting without committing: {exc}")
            for event in events:
                event.ack()  # counted and sampled: the offset may be committed

    @app.timer(max(1.0, d.idle_close_s / 2))
    async def _close_idle_windows() -> None:
        try:
            await stage.flush()
        except SinkError as exc:
            _die(f"drift rows could not be written: {exc}")


def _agent_partitions(topic_ids: TopicIds, settings: Settings) -> int:
    """The agent-span topic's partition count (0 when agent runs are off); fail fast when it is missing."""
    if not settings.agents.enabled:
        return 0
    topic = settings.kafka.agent_topic
    try:
        return topic_ids.partitions(topic)
    except KafkaException as exc:
        raise UserError(
            f"the agent-span topic {topic!r} cannot be read ({exc.args[0]}): create it (docker-compose's kafka-init "
            "and `llmops up` do) or set LLMOPS_AGENTS__ENABLED=false"
        ) from None


def _add_agent_run_stage(app: faust.App, settings: Settings, bootstrap: str, sink: ClickHouseSink) -> None:
    """Third stage: agent spans arrive keyed by trace id; its own consumer commits only what no open run needs."""
    import threading

    from processors.agents.stage import AgentRunStage

    kafka = settings.kafka
    stage = AgentRunStage(
        settings.agents.run_settings(),
        sink,
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{kafka.group_id}-agent-runs",
            "session.timeout.ms": int(kafka.consumer_session_timeout_s * 1000),
            "heartbeat.interval.ms": int(kafka.consumer_heartbeat_interval_s * 1000),
        },
        kafka.agent_topic,
        batch_max_records=settings.agents.batch_max_records,
    )
    stop = threading.Event()

    @app.task
    async def _agent_runs() -> None:
        try:
            await asyncio.to_thread(stage.run, stop)
        except SinkError as exc:
            _die(f"agent runs could not be written, exiting without committing: {exc}")
        except Exception as exc:
            _die(f"agent-run stage failed, exiting without committing: {exc!r}")

    @app.on_before_shutdown.connect
    async def _stop_agent_runs(*_: Any, **__: Any) -> None:
        stop.set()


def _add_budget_timer(app: faust.App, settings: Settings, client: Any, sink: ClickHouseSink) -> None:
    """Recompute budget status on a timer; a failed round is logged and retried next round."""
    import asyncio
    from datetime import datetime

    from processors.budget_monitor import compute_status
    from processors.core.budgets import budget_status_rows, load_budgets

    budgets_file = settings.processor.budgets_file
    assert budgets_file is not None, "added only when a budgets file is set"
    budgets = load_budgets(budgets_file)  # fail fast at start-up on a bad file

    @app.timer(settings.processor.budget_interval_s)
    async def _budget_status() -> None:
        now = datetime.now(UTC)
        try:
            statuses = await asyncio.to_thread(compute_status, client, budgets, now)
            await asyncio.to_thread(sink.write, budget_status_rows(statuses), f"budget_status:{now.isoformat()}")
        except Exception as exc:  # budget status is advisory; the stream must not stop for it
            log.warning("budget status not updated: %s", exc)


def _die_unacknowledged(exc: BaseException, step: str) -> NoReturn:
    """Exit without acknowledging the batch: it is redelivered on restart, and the fences make that harmless."""
    if isinstance(exc, SinkError):
        _die(f"clickhouse {step} failed, exiting without committing: {exc}")
    if not isinstance(exc, Exception):
        _die(f"worker stopped in the middle of a {step}; the batch will be redelivered")
    _die(f"unexpected error, exiting without committing: {exc!r}")


def _die(message: str) -> NoReturn:
    log.critical(message)
    logging.shutdown()
    os._exit(EXIT_SINK_FAILED)
