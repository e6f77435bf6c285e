"""The agent-run stage on a real broker and a real chDB store: commits, replays and the table's versions.

What the core's property tests (tests/test_agent_runs.py) cannot show: that the offsets the stage
commits through Kafka really make a restarted stage rebuild every open run whole, and that the rows
a replay writes again (whole or in part) leave exactly one complete row per run once ClickHouse
reads the table with FINAL.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from collector.config import KafkaSettings
from llmops.broker import EmbeddedBroker
from llmops.topics import ensure_topics
from processors.agents.stage import AgentRunStage
from processors.core.agents.runaway import RunawayRules
from processors.core.agents.runs import RunSettings, run_of
from processors.core.agents.spans import RunSpan, args_digest
from processors.core.agents.wire import encode_run_spans, partition_of
from sinks.clickhouse.writer import ClickHouseSink
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

S = 10**9
T0 = 1_790_000_000 * S  # 2026-09-21: in the past, so the watermark follows the spans and not the clock
SETTINGS = RunSettings(gap_s=60, lateness_s=0, idle_close_s=10**6, rules=RunawayRules(loop_repeats=3))


def _run(trace: str, start_s: int, tools: int, same_args: bool = False) -> list[RunSpan]:
    """An agent with `tools` tool calls and an LLM call after each, all within a few seconds of `start_s`."""
    root = RunSpan(trace, "root", "", "agent", "svc", "planner", T0 + start_s * S, T0 + (start_s + 3 * tools + 1) * S,
                   False)  # fmt: skip
    spans = [root]
    for i in range(tools):
        at = T0 + (start_s + 3 * i) * S
        args = args_digest('{"q": "same"}' if same_args else f'{{"q": {i}}}')
        spans.append(RunSpan(trace, f"t{i}", "root", "tool", "svc", "search", at, at + S, False, args))
        spans.append(RunSpan(trace, f"l{i}", "root", "llm", "svc", "gpt-4o", at + S, at + 2 * S, False,
                             input_tokens=100, output_tokens=10, cost=Decimal("0.00035")))  # fmt: skip
    return spans


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    name = f"agent_spans_{uuid.uuid4().hex[:8]}"
    names = {"topic": f"{name}_spans", "dead_letter_topic": f"{name}_dlq", "drift_topic": f"{name}_drift"}
    ensure_topics(broker.bootstrap, KafkaSettings(**names, agent_topic=name, partitions=1))
    return name


def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> tuple[int, int]:
    """(offset of the first record, offset after the last), from the broker's delivery reports."""
    producer = Producer({"bootstrap.servers": bootstrap})
    offsets: list[int | None] = []
    for key, value in records:
        producer.produce(
            topic, key=key.encode(), value=value, on_delivery=lambda err, msg: offsets.append(msg.offset())
        )
    assert producer.flush(30) == 0
    delivered = [offset for offset in offsets if offset is not None]
    assert len(delivered) == len(records)
    return min(delivered), max(delivered) + 1


def _split(spans: list[RunSpan], parts: int) -> list[tuple[str, bytes]]:
    """The spans of one run over `parts` records, in reverse order (arrival order must not matter)."""
    chunks = [spans[i::parts] for i in range(parts)]
    return [(spans[0].trace_id, record) for chunk in reversed(chunks) for _, record in encode_run_spans(chunk, 1)]


class _Running:
    """A stage reading in a thread; `stop` waits for it to leave the group (its commits are done by then)."""

    def __init__(self, stage: AgentRunStage) -> None:
        self.stage = stage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=stage.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def stages(broker: EmbeddedBroker, chdb_client, topic: str) -> Iterator:
    running: list[_Running] = []

    def start(group: str = "runs") -> _Running:
        config = {"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-{group}",
                  "session.timeout.ms": 3000, "heartbeat.interval.ms": 500}  # fmt: skip
        started = _Running(AgentRunStage(SETTINGS, ClickHouseSink(chdb_client, "llmops"), config, topic))
        running.append(started)
        return started

    yield start
    for item in running:
        if item._thread.is_alive():
            item.stop()


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return tp.offset
    finally:
        consumer.close()


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _rows(client, sql: str, traces: list[str]) -> list[tuple]:
    return client.query(sql, parameters={"traces": traces}).result_rows


def test_a_restart_rebuilds_open_runs_whole_and_replays_leave_one_complete_row(
    broker: EmbeddedBroker, chdb_client, topic: str, stages
) -> None:
    bootstrap = broker.bootstrap
    suffix = topic[-8:]
    a, b, c = (f"{name}-{suffix}" for name in "abc")
    run_a, run_b, run_c = _run(a, 0, 4, same_args=True), _run(b, 500, 6), _run(c, 2000, 1)
    traces = [a, b, c]
    by_trace = "SELECT trace_id, spans, tool_calls, llm_calls, cost FROM agent_runs FINAL WHERE trace_id IN {traces:Array(String)} ORDER BY trace_id"  # noqa: E501

    # Run A whole, and the first half of run B: B's spans end 500 s after A's, past A's 60 s gap.
    _produce(bootstrap, topic, _split(run_a, 3))
    first_of_b, end = _produce(bootstrap, topic, _split(run_b[: len(run_b) // 2], 2))
    first = stages()
    wait_until(lambda: first.stage.next_offsets.get(0) == end and first.stage.runs_written == 1, 60, "run A written")
    first.stop()  # B is open: the commit must stop at B's first record
    assert _committed(bootstrap, f"{topic}-runs", topic) == first_of_b
    # Stopping wrote B as far as it got (the commit stays at B's first record, so B is replayed later).
    half_b = run_of(b, {s.span_id: s for s in run_b[: len(run_b) // 2]})
    assert _rows(chdb_client, by_trace, traces) == [
        (a, 9, 4, 4, Decimal("0.0014")),
        (b, half_b.spans, half_b.tool_calls, half_b.llm_calls, half_b.cost),
    ]
    # Run A's loop was reported: the same search arguments 4 times, over the threshold of 3.
    loops = "SELECT trace_id, kind, count, final FROM agent_anomalies FINAL WHERE trace_id IN {traces:Array(String)}"
    assert _rows(chdb_client, loops, traces) == [(a, "tool_loop", 4, True)]

    # The rest of B and a later run C: a new stage in the same group replays B's first half from the commit.
    second_half_of_b, end = _produce(bootstrap, topic, _split(run_b[len(run_b) // 2 :], 2) + _split(run_c, 1))
    second = stages()
    wait_until(lambda: second.stage.next_offsets.get(0) == end and second.stage.runs_written == 1, 60, "run B written")
    second.stop()
    expected_b = run_of(b, {s.span_id: s for s in run_b})
    assert _rows(chdb_client, by_trace, traces) == [
        (a, 9, 4, 4, Decimal("0.0014")),
        (b, expected_b.spans, 6, 6, expected_b.cost),
        (c, 3, 1, 1, Decimal("0.00035")),  # open, written at the stop
    ]

    # A crash after writing and before committing replays everything again (a group that never committed),
    # and one whose commit was older than it should be rebuilds only part of B (its second half): still one
    # row per run, the complete one.
    _, end = _produce(bootstrap, topic, _split(_run(f"late-{suffix}", 4000, 1), 1))
    replay = stages(group="replay")
    wait_until(lambda: replay.stage.next_offsets.get(0) == end and replay.stage.runs_written == 3, 60, "replay")
    replay.stop()
    _commit(bootstrap, f"{topic}-partial", topic, second_half_of_b)
    partial = stages(group="partial")
    wait_until(lambda: partial.stage.next_offsets.get(0) == end and partial.stage.runs_written == 2, 60, "partial")
    partial.stop()
    # The replays wrote A, B and C again (3 rows), and B and C once more (2): FINAL keeps the complete one of each.
    assert _rows(chdb_client, by_trace, traces) == [
        (a, 9, 4, 4, Decimal("0.0014")),
        (b, expected_b.spans, 6, 6, expected_b.cost),
        (c, 3, 1, 1, Decimal("0.00035")),
    ]
    assert _rows(chdb_client, loops, traces) == [(a, "tool_loop", 4, True)]


@pytest.fixture
def two_partitions(broker: EmbeddedBroker) -> str:
    name = f"agent_spans_{uuid.uuid4().hex[:8]}"
    names = {"topic": f"{name}_spans", "dead_letter_topic": f"{name}_dlq", "drift_topic": f"{name}_drift"}
    ensure_topics(broker.bootstrap, KafkaSettings(**names, agent_topic=name, partitions=2))
    return name


def _trace_on(partition: int, label: str) -> str:
    """A trace id the agent-span records put on `partition` of 2."""
    return next(t for i in range(100) if partition_of(t := f"{label}-{i}", 2) == partition)


def _produce_partitioned(bootstrap: str, topic: str, spans: list[RunSpan]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, value in encode_run_spans(spans, 2):
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_a_rebalance_hands_open_runs_to_the_new_owner_whole(
    broker: EmbeddedBroker, chdb_client, two_partitions: str
) -> None:
    """A second stage joins while both partitions hold open runs: the first commits what it may of the
    partition it gives up and forgets its open run; the new owner replays that run from the commit, whole."""
    topic, bootstrap = two_partitions, broker.bootstrap
    a, b = _trace_on(0, f"a-{topic[-8:]}"), _trace_on(1, f"b-{topic[-8:]}")
    run_a, run_b = _run(a, 0, 4), _run(b, 0, 6)
    _produce_partitioned(bootstrap, topic, run_a[:4] + run_b[:6])  # first halves: both runs open

    def stage() -> _Running:
        config = {"bootstrap.servers": bootstrap, "group.id": f"{topic}-runs",
                  "session.timeout.ms": 3000, "heartbeat.interval.ms": 500}  # fmt: skip
        return _Running(AgentRunStage(SETTINGS, ClickHouseSink(chdb_client, "llmops"), config, topic))

    first = stage()
    try:
        wait_until(lambda: set(first.stage.next_offsets) == {0, 1}, 60, "the first stage reads both partitions")
        second = stage()
        try:
            wait_until(lambda: len(second.stage.next_offsets) == 1, 60, "the second stage owns a partition")
            assert len(first.stage.next_offsets) == 1 and first.stage.assembler.open_runs == 1
            # The rest of both runs, and later runs on both partitions that close them.
            later = [_run(_trace_on(p, f"later-{topic[-8:]}"), 1000, 1) for p in (0, 1)]
            _produce_partitioned(bootstrap, topic, run_a[4:] + run_b[6:] + [s for run in later for s in run])
            wait_until(lambda: first.stage.runs_written + second.stage.runs_written >= 2, 60, "runs A and B written")
        finally:
            second.stop()
    finally:
        first.stop()
    rows = "SELECT trace_id, spans, tool_calls, cost FROM agent_runs FINAL WHERE trace_id IN {traces:Array(String)} ORDER BY trace_id"  # noqa: E501
    expected = [run_of(t, {s.span_id: s for s in run}) for t, run in sorted([(a, run_a), (b, run_b)])]
    assert _rows(chdb_client, rows, [a, b]) == [(r.trace_id, r.spans, r.tool_calls, r.cost) for r in expected]
