"""The agent-run stage: read the trace-keyed agent-span topic, assemble runs, write rows, then commit.

A run stays open for minutes (until its inactivity gap passes the watermark), far longer than faust
may hold a message unacknowledged before a rebalance, so this stage has its own consumer (group
`<kafka.group_id>-agent-runs`, offsets committed by hand) in a thread of the worker:

1. poll a batch of records and feed their spans to the `RunAssembler` (processors/core/agents/runs.py);
2. close the runs the watermark passed, write their `agent_runs` rows and every runaway finding;
3. commit, per partition, `RunAssembler.committable`: the first record still holding a span of an
   open run. A restart or a new owner replays from there, so every open run is rebuilt whole.

Rows carry the number of spans they were computed from as the table's version (ReplacingMergeTree):
a replay that rebuilds part of a run already written adds a row with fewer spans, which the complete
one replaces. A rebalance commits what this worker may commit of the partitions it gives up and drops
their open runs (their next owner replays them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processors.core.agents.rows import anomaly_rows, run_rows
from processors.core.agents.runs import Closed, RunAssembler, RunSettings
from processors.core.agents.wire import MalformedRunRecord, decode_run_spans
from sinks.clickhouse.errors import PermanentSinkError
from sinks.clickhouse.writer import ClickHouseSink

__all__ = ["AgentRunStage"]

log = logging.getLogger(__name__)

_POLL_TIMEOUT_S = 0.5


class AgentRunStage:
    """One consumer of the agent-span topic and the runs it assembles; `run` is the blocking loop."""

    def __init__(
        self,
        settings: RunSettings,
        sink: ClickHouseSink,
        consumer_config: dict[str, Any],
        topic: str,
        batch_max_records: int = 500,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.assembler = RunAssembler(settings)
        self._sink = sink
        self._topic = topic
        self._batch = batch_max_records
        self._clock = clock
        self._consumer = Consumer(
            {
                **consumer_config,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        self._next: dict[int, int] = {}  # partition -> offset after the newest record read
        self._committed: dict[int, int] = {}
        self._stopping = False
        self.malformed = 0
        self.rows_rejected = 0
        self.runs_written = 0
        self._reported = (0, 0, 0)

    @property
    def next_offsets(self) -> dict[int, int]:
        """Per partition read so far: the offset after the newest record read."""
        return dict(self._next)

    def run(self, stop: threading.Event) -> None:
        """Poll, assemble, write, commit until `stop` is set; a failed write raises (nothing is committed)."""
        self._consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked)
        try:
            while not stop.is_set():
                self.step(self._consumer.consume(self._batch, timeout=_POLL_TIMEOUT_S))
            # A clean stop writes the open runs as far as they got, without committing them: Kafka replays
            # them whole to the next owner (whose complete rows replace these), and when the stack's embedded
            # memory broker stops with us, these rows are all that is left of them.
            self._stopping = True  # the consumer's close revokes the partitions: nothing more may be committed
            self._write(self.assembler.close_all(), self._clock() // 1_000_000)
        finally:
            self._consumer.close()

    def step(self, messages: list[Message]) -> None:
        """One round: the records in, closed runs and findings out to ClickHouse, then the commit."""
        now = self._clock()
        out = Closed()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("agent-span topic: %s", error)
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None:  # only error events lack them
                continue
            self._next[partition] = offset + 1
            try:
                spans = decode_run_spans(message.value() or b"")
            except MalformedRunRecord as exc:  # written by our own workers: a bug, not data
                self.malformed += 1
                log.error("agent-span record %d/%d skipped: %s", partition, offset, exc)
                continue
            out.extend(self.assembler.add(self._source(partition), offset, spans, now))
        out.extend(self.assembler.close(now))
        self._write(out, now // 1_000_000)
        self._commit(list(self._next))
        self._report()

    def _write(self, out: Closed, now_ms: int) -> None:
        origin = out.origins
        runs = run_rows([(run, *origin[run.trace_id]) for run in out.runs], now_ms)
        findings = anomaly_rows([(f, *origin[f.trace_id]) for f in out.findings], now_ms)
        for rows in (findings, runs):
            if not len(rows):
                continue
            try:
                self._sink.write(rows, rows.token())
            except PermanentSinkError as exc:  # ClickHouse refuses these rows whatever we do: never retry them
                self.rows_rejected += len(rows)
                log.error("%d %s row(s) refused by ClickHouse and left out: %s", len(rows), rows.table, exc)
        self.runs_written += len(runs)

    def _source(self, partition: int) -> str:
        return f"{self._topic}/{partition}"

    def _commit(self, partitions: list[int]) -> None:
        offsets = []
        for partition in partitions:
            if partition not in self._next:
                continue
            offset = self.assembler.committable(self._source(partition), self._next[partition])
            if offset > self._committed.get(partition, -1):
                offsets.append(TopicPartition(self._topic, partition, offset))
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            for tp in offsets:
                self._committed[tp.partition] = tp.offset

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._next.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what may be committed of the partitions given up, then forget their open runs."""
        mine = [tp.partition for tp in partitions if tp.partition in self._next]
        if self._stopping:
            return
        try:
            self._commit(mine)
        except KafkaException as exc:  # the group moved on: the next owner replays from the older commit
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("agent-run offsets not committed at revocation: %s", exc)
        for partition in mine:
            dropped = self.assembler.drop_source(self._source(partition))
            if dropped:
                log.info("partition %d moved away with %d open run(s); its next owner replays them", partition, dropped)
            self._next.pop(partition, None)
            self._committed.pop(partition, None)

    def _report(self) -> None:
        """Evicted runs, late spans and spans over the per-run limit are counted; say so when they grow."""
        a = self.assembler
        counts = (a.evicted_runs, a.late_spans, a.spans_over_limit)
        if counts != self._reported:
            log.warning(
                "agent-run stage left spans out or closed runs early",
                extra={
                    "evicted_runs_total": counts[0],
                    "late_spans_total": counts[1],
                    "spans_over_limit_total": counts[2],
                    "open_runs": a.open_runs,
                },
            )
            self._reported = counts
