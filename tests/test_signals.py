"""The per-window signal contract: every registered signal, and one defined here, through the in-memory harness."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmops.config import Settings
from processors.batch_handler import BatchHandler
from processors.core.evaluations import Evaluation
from processors.core.pipeline import Poison, SourceRecord
from processors.core.records import LLMCall
from processors.core.registry import SIGNALS
from processors.core.signal import ColumnSpec, Signal, TableSpec, signal_input, signal_rows
from processors.core.tables import TableRows
from processors.core.window import Window
from processors.stages import build_call_stages
from sinks.clickhouse.ddl import (
    BY_PARTITION,
    CLUSTER_MACRO,
    render_all,
    render_retention,
    script,
    signal_table_template,
)
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink
from tests.signal_harness import Record, merged, rows_of, run
from tests.test_cluster_ddl import _single_node

T0 = 1_764_000_000 * 10**9


class ErrorsSignal:
    """A signal that ships nowhere: calls and failed calls per 10-second window and provider.

    Its spec types every column, so it is the table's only declaration: no migration creates it."""

    table = TableSpec(
        "test_errors_10s",
        (
            ColumnSpec("window_start", "key", "DateTime('UTC')"),
            ColumnSpec("provider", "key", "LowCardinality(String)"),
            ColumnSpec("calls", "sum", "UInt64"),
            ColumnSpec("errors", "sum", "UInt64"),
        ),
        retention_days=30,
    )
    window = Window(10)

    def new(self) -> dict[tuple[int, str], list[int]]:
        return {}

    def fold(self, acc: dict[tuple[int, str], list[int]], calls: Sequence[LLMCall]) -> dict[tuple[int, str], list[int]]:
        for call in calls:
            counts = acc.setdefault((self.window.start_s(call.ts_ns), call.provider), [0, 0])
            counts[0] += 1
            counts[1] += call.status == "error"
        return acc

    def rows(self, acc: dict[tuple[int, str], list[int]]) -> TableRows:
        rows = TableRows(self.table.name, list(self.table.column_names))
        for (start, provider), (calls, errors) in acc.items():
            for column, value in zip(rows.columns, (start, provider, calls, errors), strict=True):
                column.append(value)
        return rows


ERRORS = ErrorsSignal()
REGISTERED = (*SIGNALS, ERRORS)  # registering a signal: one more entry next to the shipped ones

call_strategy = st.builds(
    LLMCall,
    ts_ns=st.integers(T0, T0 + 3 * 60 * 10**9),
    trace_id=st.just("t"),
    span_id=st.just("s"),
    service=st.sampled_from(["a", "b"]),
    provider=st.sampled_from(["openai", "anthropic"]),
    request_model=st.sampled_from(["", "gpt-4o"]),
    response_model=st.sampled_from(["", "gpt-4o-2024-08-06"]),
    input_tokens=st.integers(0, 10**6),
    output_tokens=st.integers(0, 10**4),
    duration_ms=st.floats(0.5, 60_000),
    ttft_ms=st.one_of(st.none(), st.floats(-5, 5_000)),
    cost=st.one_of(st.none(), st.integers(0, 10**12).map(lambda n: Decimal(n).scaleb(-12))),
    status=st.sampled_from(["ok", "error"]),
)

evaluation_strategy = st.builds(
    Evaluation,
    ts_ns=st.integers(T0, T0 + 3 * 60 * 10**9),
    trace_id=st.just("t"),
    span_id=st.just("s"),
    evaluator=st.sampled_from(["relevance", "toxicity"]),
    score_value=st.one_of(st.none(), st.just(0.0), st.floats(-10, 10, allow_nan=False)),
    score_label=st.sampled_from(["", "pass", "fail"]),
    explanation=st.just(""),
    error_type=st.sampled_from(["", "timeout"]),
    service=st.sampled_from(["a", "b"]),
    model=st.sampled_from(["", "gpt-4o"]),
    prompt_name=st.just("p"),
    prompt_version=st.sampled_from(["1", "2"]),
    agent=st.just(""),
    source=st.just("event"),
)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a == b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


Merged = dict[tuple[Any, ...], dict[str, Any]]


def _assert_same_totals(signal: Signal[Any], got: Merged, want: Merged) -> None:
    assert got.keys() == want.keys(), signal.table.name
    for key, values in want.items():
        for name, value in values.items():
            assert _close(got[key][name], value), (signal.table.name, key, name, got[key][name], value)


@settings(max_examples=40, deadline=None)
@given(records=st.lists(st.tuples(st.sampled_from(["topic/0", "topic/1"]), st.lists(call_strategy, max_size=3),
                                  st.lists(evaluation_strategy, max_size=3)),
                        max_size=25),
       data=st.data())  # fmt: skip
def test_any_batch_split_arrival_and_replay_gives_the_totals_of_one_fold(
    records: list[tuple[str, list[LLMCall], list[Evaluation]]], data: st.DataObject
) -> None:
    """The contract's promise, for each registered signal: rows stored batch by batch, with crashes that
    replay from the last commit, merge into what one fold of every call (or evaluation) gives."""
    offsets: dict[str, int] = defaultdict(int)
    log = []
    for source, calls, evaluations in records:
        log.append(Record(source, offsets[source], calls, evaluations))
        offsets[source] += 1
    batches: list[list[Record]] = []
    position = committed = 0
    while position < len(log):
        size = data.draw(st.integers(1, len(log) - position))
        batches.append(log[position : position + size])
        if data.draw(st.booleans()):  # crash after storing, before committing: the consumer reads again
            position = committed = data.draw(st.integers(committed, position))
        else:
            position = committed = position + size
    sink = run(REGISTERED, batches)
    every: dict[str, list[Any]] = {
        "calls": [call for record in log for call in record.calls],
        "evaluations": [result for record in log for result in record.evaluations],
    }
    for signal in REGISTERED:
        whole = merged(signal.table, rows_of(signal_rows(signal, every[signal_input(signal)])))
        _assert_same_totals(signal, merged(signal.table, sink.rows[signal.table.name]), whole)


def test_a_signal_defined_in_a_test_runs_beside_the_shipped_ones() -> None:
    calls = [
        LLMCall(ts_ns=T0 + 1, trace_id="t", span_id="1", provider="openai", status="error"),
        LLMCall(ts_ns=T0 + 9 * 10**9, trace_id="t", span_id="2", provider="openai"),
        LLMCall(ts_ns=T0 + 10 * 10**9, trace_id="t", span_id="3", provider="openai"),
        LLMCall(ts_ns=T0 + 11 * 10**9, trace_id="t", span_id="4", provider="anthropic", status="error"),
    ]
    log = [Record("topic/0", 0, calls[:2]), Record("topic/1", 0, calls[2:3]), Record("topic/0", 1, calls[3:])]
    sink = run(REGISTERED, [log[:2], log[1:]])  # the second batch replays topic/1's record: the fence skips it
    start = T0 // 10**9
    stored = [(r["window_start"], r["provider"], r["calls"], r["errors"], r["_ingest_source"], r["_ingest_offset"])
              for r in sink.rows["test_errors_10s"]]  # fmt: skip
    assert sorted(stored) == [
        (start, "openai", 2, 1, "topic/0", 0),
        (start + 10, "anthropic", 1, 1, "topic/0", 1),
        (start + 10, "openai", 1, 0, "topic/1", 0),
    ]
    # The shipped signals stored the same calls once each.
    assert sum(r["calls"] for r in sink.rows["llm_usage_1m"]) == 4
    assert sum(r["count"] for r in sink.rows["llm_latency_1m"] if r["metric"] == "duration_ms") == 4


def test_the_worker_runs_the_registry() -> None:
    stages = build_call_stages(Settings())
    assert tuple(stages.signals) == SIGNALS
    assert stages.tables == [
        "otel_traces",
        "llm_calls",
        "ingest_errors",
        "llm_evaluations",
        *(s.table.name for s in SIGNALS),
    ]


def test_rows_are_tagged_with_the_highest_offset_of_their_source() -> None:
    one = LLMCall(ts_ns=T0, trace_id="t", span_id="1", service="a")
    result = Evaluation(T0, "t", "1", "relevance", 0.5, "", "", "", "a", "", "", "", "", "event")
    log = [Record("topic/0", 3, [one], [result]), Record("topic/0", 7, []), Record("topic/0", 5, [one], [result])]
    sink = run(SIGNALS, [log])
    for signal in SIGNALS:
        assert {r["_ingest_offset"] for r in sink.rows[signal.table.name]} == {7}, signal.table.name


def test_table_specs_refuse_what_cannot_be_merged() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        TableSpec("t", (ColumnSpec("a", "key"), ColumnSpec("a", "sum")))
    with pytest.raises(ValueError, match="no known merge"):
        TableSpec("t", (ColumnSpec("a", "key"), ColumnSpec("b", "avg")))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no key"):
        TableSpec("t", (ColumnSpec("a", "sum"),))
    with pytest.raises(ValueError, match="every column a type"):
        TableSpec("t", (ColumnSpec("w", "key", "DateTime"), ColumnSpec("n", "sum")))
    with pytest.raises(ValueError, match="DateTime key column"):
        TableSpec("t", (ColumnSpec("k", "key", "String"), ColumnSpec("n", "sum", "UInt64")))


_SIMPLE = re.compile(r"^SimpleAggregateFunction\((\w+), ")


def test_every_registered_signal_writes_its_migrated_table(chdb_client: Client) -> None:
    """Columns in the table's order (less the delivery columns); a SimpleAggregateFunction column merges as declared."""
    for signal in SIGNALS:
        stored = chdb_client.query(
            "SELECT name, type FROM system.columns WHERE database = 'llmops' AND table = {t:String} ORDER BY position",
            parameters={"t": signal.table.name},
        ).result_rows
        columns = [(name, kind) for name, kind in stored if name not in ("_ingest_source", "_ingest_offset")]
        assert [name for name, _ in columns] == list(signal.table.column_names), signal.table.name
        for column, (_, kind) in zip(signal.table.columns, columns, strict=True):
            engine_merge = _SIMPLE.match(kind)
            if engine_merge is not None:
                stored_as = {"sum_map": "sumMap"}.get(column.merge, column.merge)  # the engine's function name
                assert stored_as == engine_merge.group(1), (signal.table.name, column.name, kind)


# -- a signal's table from its spec: the one file and the one registry line are all a new signal needs --------


@pytest.fixture(scope="module")
def created(chdb_client: Client) -> list[str]:
    """The module's store migrated with the test signal registered: what the runner applied for it."""
    return apply_migrations(chdb_client, "llmops", signals=REGISTERED)


def test_the_runner_creates_a_spec_declared_table_once(chdb_client: Client, created: list[str]) -> None:
    assert created == ["signal table test_errors_10s"]  # the shipped tables were migrated by the fixture already
    assert apply_migrations(chdb_client, "llmops", signals=REGISTERED) == []
    stored = chdb_client.query(
        "SELECT name, type FROM system.columns WHERE database = 'llmops' AND table = 'test_errors_10s' "
        "ORDER BY position"
    ).result_rows
    assert stored == [
        ("window_start", "DateTime('UTC')"),
        ("provider", "LowCardinality(String)"),
        ("calls", "SimpleAggregateFunction(sum, UInt64)"),
        ("errors", "SimpleAggregateFunction(sum, UInt64)"),
        ("_ingest_source", "LowCardinality(String)"),
        ("_ingest_offset", "SimpleAggregateFunction(max, UInt64)"),
    ]
    keys = chdb_client.query(
        "SELECT sorting_key, partition_key FROM system.tables WHERE database = 'llmops' AND name = 'test_errors_10s'"
    ).result_rows
    assert keys == [("window_start, provider, _ingest_source", "toYYYYMM(window_start)")]


def _error_request(offset: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(4):
        start = T0 + offset * 10**10 + n  # one 10-second window per record
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", kind=3,
                               start_time_unix_nano=start, end_time_unix_nano=start + 10**9)  # fmt: skip
        span.status.code = 2 if n == 0 else 1
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
                           ("gen_ai.request.model", "gpt-4o-mini")):  # fmt: skip
            span.attributes.add(key=key).value.string_value = value
    return request.SerializeToString()


def test_the_worker_path_writes_a_new_signal_into_its_spec_table_once(chdb_client: Client, created: list[str]) -> None:
    """The batch handler with the test signal registered: its rows land in the table its spec declared, and a
    batch read again after a crash (same records) adds nothing."""
    stages = dataclasses.replace(build_call_stages(Settings()), signals=REGISTERED)
    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), stages, _no_dead_letter)
    records = [SourceRecord("otlp_spans", 0, offset, _error_request(offset), "signal-spec/0") for offset in range(3)]
    asyncio.run(handler.handle(records[:2]))
    asyncio.run(handler.handle(records))  # records 0 and 1 again: the table's fence skips them
    chdb_client.command("OPTIMIZE TABLE llmops.test_errors_10s FINAL")  # the engine merges as the spec said
    stored = chdb_client.query(
        "SELECT window_start, provider, calls, errors, _ingest_offset FROM llmops.test_errors_10s "
        "WHERE _ingest_source = 'signal-spec/0' ORDER BY window_start"
    ).result_rows
    start = T0 // 10**9
    assert [(int(w.timestamp()) - start, p, c, e, o) for w, p, c, e, o in stored] == [
        (0, "openai", 4, 1, 1),  # records 0 and 1 (one window each), tagged with the first batch's highest offset
        (10, "openai", 4, 1, 1),
        (20, "openai", 4, 1, 2),
    ]


async def _no_dead_letter(item: Poison) -> None:
    raise AssertionError(f"dead-lettered: {item}")


def test_the_cluster_rendering_of_a_spec_table_matches_the_single_node_table(chdb_client: Client, created) -> None:
    rendered = dict(render_all(CLUSTER_MACRO, signals=REGISTERED))
    local, distributed = rendered["signal table test_errors_10s"]
    assert (
        "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/test_errors_10s_local'" in local
    )
    assert distributed.endswith(f"test_errors_10s_local, {BY_PARTITION})")
    chdb_client.command("CREATE DATABASE IF NOT EXISTS signal_cluster_check")
    chdb_client.command(_single_node(local).replace("IF NOT EXISTS ", "IF NOT EXISTS signal_cluster_check.", 1))
    columns = (
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} ORDER BY position"
    )
    assert chdb_client.query(
        columns, parameters={"d": "signal_cluster_check", "t": "test_errors_10s_local"}
    ).result_rows == (chdb_client.query(columns, parameters={"d": "llmops", "t": "test_errors_10s"}).result_rows)
    # `llmops migrate --print` prints it with the rest.
    assert "CREATE TABLE IF NOT EXISTS test_errors_10s\n" in script(signals=REGISTERED)


def test_a_spec_table_gets_its_retention(chdb_client: Client, created: list[str]) -> None:
    ((_, (statement,)),) = [item for item in render_retention(None, REGISTERED) if "test_errors_10s" in item[0]]
    assert statement == "ALTER TABLE test_errors_10s\n    MODIFY TTL toDateTime(window_start) + INTERVAL 30 DAY"
    chdb_client.command(statement.replace("test_errors_10s", "llmops.test_errors_10s", 1))
    engine = chdb_client.query(
        "SELECT engine_full FROM system.tables WHERE database = 'llmops' AND name = 'test_errors_10s'"
    ).result_rows[0][0]
    assert "TTL toDateTime(window_start) + toIntervalDay(30)" in engine


def test_a_spec_with_a_name_that_is_not_an_identifier_is_refused() -> None:
    spec = TableSpec("bad-name", (ColumnSpec("w", "key", "DateTime"), ColumnSpec("n", "sum", "UInt64")))
    with pytest.raises(ValueError, match="identifiers"):
        signal_table_template(spec)
