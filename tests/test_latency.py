"""Latency row builder (windows, keys, metrics), partial-row merging in chDB, and TTFT from spans."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from processors.core.latency import (
    KEY_COLUMNS,
    LATENCY_COLUMNS,
    METRIC_DURATION,
    METRIC_TPOT,
    METRIC_TTFT,
    LatencyRows,
    latency_rows,
    ttft_ms_from_span,
    window_start_s,
)
from processors.core.records import LLMCall, SpanEvent, SpanView
from processors.core.sketch import Sketch, gamma_for

MINUTE_NS = 60_000_000_000
T0_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
EPS = 1e-9


def call(ts_ns: int, duration_ms: float, ttft_ms: float | None = None, output_tokens: int = 0, **key: str) -> LLMCall:
    fields: dict[str, Any] = {
        "service": "chat-api",
        "environment": "prod",
        "provider": "openai",
        "request_model": "gpt-4o",
        "operation": "chat",
    }
    fields.update(key)
    return LLMCall(
        ts_ns=ts_ns,
        trace_id="t",
        span_id="s",
        duration_ms=duration_ms,
        ttft_ms=ttft_ms,
        output_tokens=output_tokens,
        **fields,
    )


def as_records(rows: LatencyRows) -> list[dict[str, Any]]:
    return [{name: rows.columns[name][i] for name in rows.column_names} for i in range(len(rows))]


def only(rows: LatencyRows, metric: str) -> list[dict[str, Any]]:
    return [r for r in as_records(rows) if r["metric"] == metric]


# ---------------------------------------------------------------- row builder


def test_columns_and_empty_batch() -> None:
    rows = latency_rows([])
    assert len(rows) == 0
    assert rows.column_names == LATENCY_COLUMNS
    assert [list(c) for c in rows.column_data()] == [[] for _ in LATENCY_COLUMNS]


def test_window_assignment_at_minute_boundaries() -> None:
    ts = [T0_NS - 1, T0_NS, T0_NS + MINUTE_NS - 1, T0_NS + MINUTE_NS]
    assert window_start_s(ts).tolist() == [T0_NS // 10**9 - 60, T0_NS // 10**9, T0_NS // 10**9, T0_NS // 10**9 + 60]
    assert window_start_s([-1]).tolist() == [-60]  # floor, not truncation
    rows = latency_rows([call(t, 100.0 + i) for i, t in enumerate(ts)])
    got = {(r["window_start"], r["count"], r["min"]) for r in only(rows, METRIC_DURATION)}
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert got == {
        (datetime(2025, 12, 31, 23, 59, tzinfo=UTC), 1, 100.0),
        (start, 2, 101.0),
        (datetime(2026, 1, 1, 0, 1, tzinfo=UTC), 1, 103.0),
    }
    assert all(r["window_start"].tzinfo is UTC for r in as_records(rows))


def test_non_streamed_calls_give_no_ttft_or_tpot_rows() -> None:
    rows = latency_rows([call(T0_NS, 800.0, None, output_tokens=50), call(T0_NS + 5, 900.0, None, output_tokens=10)])
    assert {r["metric"] for r in as_records(rows)} == {METRIC_DURATION}
    (d,) = only(rows, METRIC_DURATION)
    assert (d["count"], d["sum"], d["min"], d["max"]) == (2, 1700.0, 800.0, 900.0)


def test_metrics_by_hand() -> None:
    calls = [
        call(T0_NS, 1000.0, 200.0, output_tokens=100),  # tpot (1000-200)/100 = 8
        call(T0_NS + 1, 600.0, 100.0, output_tokens=0),  # streamed, no tokens: ttft only
        call(T0_NS + 2, 300.0, None, output_tokens=40),  # not streamed: duration only
    ]
    rows = latency_rows(calls)
    (ttft,) = only(rows, METRIC_TTFT)
    (dur,) = only(rows, METRIC_DURATION)
    (tpot,) = only(rows, METRIC_TPOT)
    assert (ttft["count"], ttft["sum"], ttft["min"], ttft["max"]) == (2, 300.0, 100.0, 200.0)
    assert (dur["count"], dur["sum"], dur["min"], dur["max"]) == (3, 1900.0, 300.0, 1000.0)
    assert (tpot["count"], tpot["sum"], tpot["min"], tpot["max"]) == (1, 8.0, 8.0, 8.0)
    # quantiles are clamped into [min, max]: with one value they are the value itself
    assert tpot["p50"] == tpot["p99"] == 8.0
    # rank floor(q * (n - 1)): of two values every q < 1 picks the smaller (numpy "lower")
    assert ttft["p99"] == pytest.approx(np.quantile([100.0, 200.0], 0.99, method="lower"), rel=0.01)
    for r in (ttft, dur, tpot):
        assert r["nonpositive_count"] == 0
        assert r["sketch_gamma"] == gamma_for(0.01)
        assert sum(r["sketch"].values()) == r["count"]
        assert {k: r[k] for k in KEY_COLUMNS} == {
            "service": "chat-api",
            "environment": "prod",
            "provider": "openai",
            "model": "gpt-4o",
            "request_model": "gpt-4o",
            "operation": "chat",
        }


def test_keys_are_kept_apart_and_model_prefers_response_model() -> None:
    calls = [
        call(T0_NS, 100.0),
        call(T0_NS, 200.0, service="search"),
        call(T0_NS, 300.0, environment="staging"),
        call(T0_NS, 400.0, provider="anthropic"),
        call(T0_NS, 500.0, operation="embeddings"),
        call(T0_NS, 600.0, response_model="gpt-4o-2024-08-06"),
        call(T0_NS, 700.0, request_model="", response_model="gpt-4o"),  # same key as the first
    ]
    rows = only(latency_rows(calls), METRIC_DURATION)
    assert len(rows) == 6
    by_key = {tuple(r[k] for k in KEY_COLUMNS): (r["count"], r["sum"]) for r in rows}
    assert by_key[("chat-api", "prod", "openai", "gpt-4o", "gpt-4o", "chat")] == (2, 800.0)
    assert by_key[("chat-api", "prod", "openai", "gpt-4o-2024-08-06", "gpt-4o", "chat")] == (1, 600.0)
    assert by_key[("search", "prod", "openai", "gpt-4o", "gpt-4o", "chat")] == (1, 200.0)


def test_zero_and_negative_values_are_counted() -> None:
    calls = [
        call(T0_NS, 500.0, -3.0, output_tokens=10),  # ttft < 0 from clock skew
        call(T0_NS, 0.0, 0.0, output_tokens=10),  # zero duration and ttft; tpot 0
        call(T0_NS, 400.0, 500.0, output_tokens=10),  # ttft > duration: tpot < 0
        call(T0_NS, 900.0, 100.0, output_tokens=10),
    ]
    rows = latency_rows(calls)
    (ttft,) = only(rows, METRIC_TTFT)
    (dur,) = only(rows, METRIC_DURATION)
    (tpot,) = only(rows, METRIC_TPOT)
    assert (ttft["count"], ttft["nonpositive_count"], ttft["min"]) == (4, 2, -3.0)
    assert (dur["count"], dur["nonpositive_count"], dur["min"]) == (4, 1, 0.0)
    assert (tpot["count"], tpot["nonpositive_count"], tpot["min"]) == (4, 2, -10.0)
    assert sum(ttft["sketch"].values()) == 2
    assert ttft["p50"] == pytest.approx(100.0, rel=0.01)  # quantiles over the positive values


def test_row_quantiles_against_numpy() -> None:
    rng = np.random.default_rng(8)
    ttft = rng.lognormal(np.log(300), 0.6, size=5000)
    calls = [call(T0_NS + i, 2000.0 + t, float(t), output_tokens=200) for i, t in enumerate(ttft)]
    (row,) = only(latency_rows(calls), METRIC_TTFT)
    truth = np.quantile(ttft, [0.5, 0.9, 0.95, 0.99], method="lower")
    got = np.array([row["p50"], row["p90"], row["p95"], row["p99"]])
    assert np.all(np.abs(got - truth) / truth <= 0.01 + EPS)
    assert row["sum"] == pytest.approx(ttft.sum(), rel=1e-12)


def test_relative_accuracy_is_configurable() -> None:
    rows = latency_rows([call(T0_NS, 100.0), call(T0_NS, 130.0)], relative_accuracy=0.05)
    (d,) = only(rows, METRIC_DURATION)
    assert d["sketch_gamma"] == gamma_for(0.05)
    assert Sketch.from_map(d["sketch"], d["sketch_gamma"]) == Sketch.from_values([100.0, 130.0], 0.05)


# ---------------------------------------------------------------- partial rows merge in ClickHouse


def insert(client: Client, rows: LatencyRows) -> None:
    client.insert("llm_latency_1m", rows.column_data(), column_names=list(rows.column_names), column_oriented=True)  # type: ignore[arg-type]  # clickhouse-connect inserts numpy columns; its annotation says Sequence


def test_partial_rows_from_several_batches_merge_to_the_whole(chdb_client: Client) -> None:
    rng = np.random.default_rng(21)
    n, windows = 60_000, 60
    models = rng.choice(["m-fast", "m-slow"], size=n)
    ts = T0_NS + rng.integers(0, windows, size=n) * MINUTE_NS + rng.integers(0, MINUTE_NS, size=n)
    ttft = np.where(models == "m-fast", rng.lognormal(np.log(150), 0.5, n), rng.lognormal(np.log(900), 0.9, n))
    streamed = rng.random(n) < 0.8
    tokens = rng.integers(0, 400, size=n)
    duration = ttft + tokens * rng.lognormal(np.log(20), 0.3, n)
    calls = [
        call(
            int(ts[i]),
            float(duration[i]),
            float(ttft[i]) if streamed[i] else None,
            int(tokens[i]),
            request_model=str(models[i]),
            service="merge-test",
        )
        for i in range(n)
    ]
    # arrival order is not event order: batches hold random mixes of windows (late data included)
    order = rng.permutation(n)
    for part in np.array_split(order, 7):
        insert(chdb_client, latency_rows([calls[i] for i in part]))

    whole = latency_rows(calls)
    merged = chdb_client.query(
        "SELECT metric, model, toUnixTimestamp(window_start), sum(count), min(min), max(max), sumMap(sketch),"
        " sum(nonpositive_count), count()"
        " FROM llm_latency_1m WHERE service = 'merge-test'"
        " GROUP BY metric, model, window_start"
    ).result_rows
    assert len(merged) == len(whole) == 3 * 2 * windows
    expected = {(r["metric"], r["model"], int(r["window_start"].timestamp())): r for r in as_records(whole)}
    partials = 0
    for metric, model, w, count, lo, hi, buckets, nonpositive, nrows in merged:
        e = expected[(metric, model, w)]
        assert (count, lo, hi, nonpositive) == (e["count"], e["min"], e["max"], e["nonpositive_count"])
        assert buckets == e["sketch"]  # bucket for bucket
        partials += nrows
    assert partials > len(merged)  # several partial rows per window and key really happened

    # quantiles over the whole hour and per model, merged inside ClickHouse, against numpy
    got = chdb_client.query(
        "SELECT model, sketch_quantile(sumMap(sketch), 0.5), sketch_quantile(sumMap(sketch), 0.95),"
        " sketch_quantile(sumMap(sketch), 0.99)"
        " FROM llm_latency_1m WHERE service = 'merge-test' AND metric = 'ttft_ms'"
        " AND window_start >= %(lo)s AND window_start < %(hi)s GROUP BY model ORDER BY model",
        parameters={"lo": datetime(2026, 1, 1, tzinfo=UTC), "hi": datetime(2026, 1, 1, 1, tzinfo=UTC)},
    ).result_rows
    assert [g[0] for g in got] == ["m-fast", "m-slow"]
    for model, *qs in got:
        truth = np.quantile(ttft[streamed & (models == model)], [0.5, 0.95, 0.99], method="lower")
        assert np.all(np.abs(np.array(qs) - truth) / truth <= 0.01 + EPS), (model, qs, truth)

    # the parametrised view gives the same, per key, over the first 30 minutes only
    view = chdb_client.query(
        "SELECT model, samples, p50, p99"
        " FROM llm_latency_merged(from_ts = '2026-01-01 00:00:00', to_ts = '2026-01-01 00:30:00')"
        " WHERE service = 'merge-test' AND metric = 'duration_ms' ORDER BY model"
    ).result_rows
    first_half = ts < T0_NS + 30 * MINUTE_NS
    for model, samples, p50, p99 in view:
        sel = duration[first_half & (models == model)]
        assert samples == sel.size
        truth = np.quantile(sel, [0.5, 0.99], method="lower")
        assert np.all(np.abs(np.array([p50, p99]) - truth) / truth <= 0.01 + EPS)


def test_insert_without_ingest_columns_uses_defaults(chdb_client: Client) -> None:
    insert(chdb_client, latency_rows([call(T0_NS, 42.0, service="defaults-test")]))
    assert chdb_client.query(
        "SELECT _ingest_source, _ingest_offset FROM llm_latency_1m WHERE service = 'defaults-test'"
    ).result_rows == [("", 0)]


# ---------------------------------------------------------------- TTFT from spans

START = 1_767_225_600_000_000_000


def span(attributes: Mapping[str, object] | None = None, events: list[SpanEvent] | None = None) -> SpanView:
    return SpanView(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="",
        name="chat gpt-4o",
        kind=3,
        start_ns=START,
        end_ns=START + 2_000_000_000,
        status_code=0,
        status_message="",
        attributes=dict(attributes or {}),
        resource={},
        events=list(events or []),
    )


def test_ttft_from_semconv_attribute_in_seconds() -> None:
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": 0.25})) == 250.0
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": 2})) == 2000.0
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": "0.5"})) == 500.0


def test_attribute_wins_over_events() -> None:
    s = span(
        {"gen_ai.response.time_to_first_chunk": 0.1}, [SpanEvent(START + 700_000_000, "First Token Stream Event", {})]
    )
    assert ttft_ms_from_span(s) == 100.0


@pytest.mark.parametrize(
    "name", ["gen_ai.content.completion.chunk", "llm.content.completion.chunk", "First Token Stream Event"]
)
def test_ttft_from_first_chunk_event(name: str) -> None:
    events = [
        SpanEvent(START + 10_000_000, "gen_ai.client.inference.operation.details", {}),  # not a chunk
        SpanEvent(START + 450_000_000, name, {}),
        SpanEvent(START + 300_500_000, name, {}),  # earliest chunk, out of order
        SpanEvent(START + 900_000_000, name, {}),
    ]
    assert ttft_ms_from_span(span(events=events)) == 300.5


def test_ttft_from_extra_attributes() -> None:
    extra = ("langfuse.observation.completion_start_time", "x.first_token_ns")
    assert ttft_ms_from_span(span({"x.first_token_ns": START + 123_000_000}), extra) == 123.0
    assert ttft_ms_from_span(span({"x.first_token_ns": str(START + 5_000_000)}), extra) == 5.0
    iso = {"langfuse.observation.completion_start_time": "2026-01-01T00:00:00.488Z"}
    assert ttft_ms_from_span(span(iso), extra) == 488.0
    quoted = {"langfuse.observation.completion_start_time": '"2026-01-01T01:00:00.25+01:00"'}
    assert ttft_ms_from_span(span(quoted), extra) == 250.0
    naive = {"langfuse.observation.completion_start_time": "2026-01-01 00:00:01"}
    assert ttft_ms_from_span(span(naive), extra) == 1000.0
    # the first listed name that is readable wins; unreadable ones fall through
    both = {"langfuse.observation.completion_start_time": "soon", "x.first_token_ns": START + 7_000_000}
    assert ttft_ms_from_span(span(both), extra) == 7.0
    # not consulted unless named
    assert ttft_ms_from_span(span(iso)) is None


def test_ttft_absent_or_unreadable() -> None:
    assert ttft_ms_from_span(span()) is None
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": True})) is None
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": "n/a"})) is None
    assert ttft_ms_from_span(span({"gen_ai.response.time_to_first_chunk": float("nan")})) is None
    assert ttft_ms_from_span(span(events=[SpanEvent(0, "First Token Stream Event", {})])) is None
    # unreadable attribute falls through to the events
    s = span(
        {"gen_ai.response.time_to_first_chunk": "n/a"},
        [SpanEvent(START + 2_000_000, "llm.content.completion.chunk", {})],
    )
    assert ttft_ms_from_span(s) == 2.0


def test_ttft_before_span_start_is_returned_negative() -> None:
    s = span(events=[SpanEvent(START - 5_000_000, "gen_ai.content.completion.chunk", {})])
    assert ttft_ms_from_span(s) == -5.0
