"""Every dashboard query and every alert rule, executed against chDB loaded by the real pipeline.

The store holds loadgen traffic sent through the OpenTelemetry SDK to a local OTLP/HTTP sink
and fed through the pipeline's own decode/normalise/aggregate code and ClickHouse sink
(no Kafka). Tables the stream does not fill yet (budget_status, llm_drift, change_events)
and the alert scenarios get hand-made rows. Queries are expanded with tests/grafana_macros.py the
way Grafana and the ClickHouse plugin expand them.

Timeline (UTC): window 1 is 2026-03-02 10:00 (all services, budgets over, drift, poison
records, one key with slow TTFT); window 2 is one day later (one service whose models are all
priced, budgets fine, drift null). Alert rules are evaluated at the end of a window: the fire
scenario must fire for exactly the expected instances, the quiet one for none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen
from processors.core.latency import metric_rows
from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, parse_records, poison_rows
from processors.core.records import LLMCall
from processors.core.rows import call_rows
from processors.core.usage import usage_rows
from processors.stages import build_call_stages
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink
from tests.agent_eval_rows import (
    KEYS,
    OPEN_RUN_TRACE,
    agent_runs,
    anomalies,
    evaluation_1m_rows,
    evaluation_results,
    run_spans,
    superseded_runs,
)
from tests.alert_eval import RuleRun, evaluate_once, parse_duration, run_rule
from tests.grafana_macros import ALL, TimeRange, Variable, render_panel_query
from tests.otlp_sink import collecting_otlp_sink

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))
RULES_FILE = ROOT / "dashboards" / "provisioning" / "alerting" / "rules.yaml"

W1 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
W2 = W1 + timedelta(days=1)
W1_CALLS, W2_CALLS = 400, 150
STEP = timedelta(milliseconds=750)
W1_END = W1 + W1_CALLS * STEP
W2_END = W2 + W2_CALLS * STEP
RUN_COLUMNS = [
    "start_ts",
    "service",
    "root_agent",
    "user_id",
    "duration_ms",
    "llm_calls",
    "tool_calls",
    "errors",
    "cost_usd",
    "unpriced_calls",
    "trace_id",
]
SLOW = ("slow-svc", "production", "anthropic", "claude-sonnet-4-slow-2025", "claude-sonnet-4-slow", "chat")

# Columns each panel must return, in order (what the panel's field overrides and legends rely on).
EXPECTED_COLUMNS: dict[tuple[str, str], list[str]] = {
    ("llmops-agents", "Cost per run p50 / p90 / p99"): ["time", "p50", "p90", "p99", "unpriced_runs"],
    ("llmops-agents", "LLM calls and tool calls per run"): ["time", "llm_calls_per_run", "tool_calls_per_run"],
    ("llmops-agents", "MCP share of tool calls"): ["time", "service", "mcp_share"],
    ("llmops-agents", "Most expensive runs"): RUN_COLUMNS,
    ("llmops-agents", "Newest runaway findings"): [
        "detected_at",
        "service",
        "root_agent",
        "kind",
        "subject",
        "count",
        "threshold",
        "first_ts",
        "last_ts",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "final",
        "trace_id",
    ],
    ("llmops-agents", "Runaway findings by kind"): ["time", "kind", "findings"],
    ("llmops-agents", "Runs per minute by service and root agent"): ["time", "series", "runs_per_min"],
    ("llmops-agents", "Slowest runs"): RUN_COLUMNS,
    ("llmops-agents", "Tool calls by tool name"): ["time", "tool", "tool_calls"],
    ("llmops-latency", "Call rate by requested model"): ["time", "request_model", "calls_per_s"],
    ("llmops-latency", "Duration p50 / p95 / p99 by requested model"): ["time", "request_model", "p50", "p95", "p99"],
    ("llmops-latency", "Duration p95 by provider"): ["time", "provider", "p95"],
    ("llmops-latency", "Error rate by requested model"): ["time", "request_model", "error_rate"],
    ("llmops-latency", "Percentiles over the range"): [
        "metric",
        "provider",
        "request_model",
        "samples",
        "p50",
        "p90",
        "p95",
        "p99",
        "max_ms",
    ],
    ("llmops-latency", "TTFT p50 / p95 / p99 by requested model"): ["time", "request_model", "p50", "p95", "p99"],
    ("llmops-latency", "TTFT p95 by provider"): ["time", "provider", "p95"],
    ("llmops-latency", "Time per output token p50 / p95 by requested model"): ["time", "request_model", "p50", "p95"],
    ("llmops-pipeline", "Dead-lettered records"): ["dead_lettered"],
    ("llmops-pipeline", "End-to-end freshness"): ["seconds_behind"],
    ("llmops-pipeline", "Freshness by service"): ["service", "newest_span", "seconds_behind"],
    ("llmops-pipeline", "Ingest errors"): ["errors"],
    ("llmops-pipeline", "Ingest errors by stage"): ["time", "stage", "errors"],
    ("llmops-pipeline", "Ingest rate (spans/s) by service"): ["time", "service", "spans_per_s"],
    ("llmops-pipeline", "LLM calls stored per second"): ["time", "service", "calls_per_s"],
    ("llmops-pipeline", "Recent ingest errors"): [
        "ts",
        "stage",
        "reason",
        "service",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "payload_bytes",
        "dead_lettered",
    ],
    ("llmops-quality", "Change events"): ["ts", "service", "kind", "old_value", "new_value", "model", "prompt_name"],
    ("llmops-quality", "Currently drifted keys"): [
        "service",
        "model",
        "prompt_name",
        "prompt_version",
        "signal",
        "statistic",
        "value",
        "p_value",
        "threshold",
        "n_ref",
        "n_cur",
        "reference",
        "window_start",
        "window_end",
    ],
    ("llmops-quality", "Drift effect sizes (value / threshold)"): ["time", "series", "value_over_threshold"],
    ("llmops-quality", "Drift test p-values (Holm-adjusted)"): ["time", "series", "p_value"],
    ("llmops-quality", "Drifted statistics per signal"): ["time", "signal", "drifted_statistics"],
    ("llmops-quality", "Evaluation label shares"): ["time", "series", "share"],
    ("llmops-quality", "Evaluation score mean by evaluator and prompt version"): ["time", "series", "mean_score"],
    ("llmops-quality", "Evaluation score percentiles"): [
        "evaluator",
        "service",
        "model",
        "prompt_name",
        "prompt_version",
        "scored",
        "mean_score",
        "p10",
        "p50",
        "p90",
    ],
    ("llmops-quality", "Evaluations per evaluator"): ["time", "evaluator", "evaluations"],
    ("llmops-quality", "Finish-reason mix"): ["time", "finish_reason", "calls"],
    ("llmops-quality", "Refusal rate"): ["time", "service", "refusal_rate"],
    ("llmops-quality", "Retrieval score trend"): ["time", "service", "mean_score", "p10_score"],
    ("llmops-spend", "Budget status"): [
        "budget_id",
        "scope_kind",
        "scope_value",
        "period",
        "period_start",
        "budget_usd",
        "spend_usd",
        "fraction",
        "status",
        "computed_at",
    ],
    ("llmops-spend", "Cost by environment"): ["time", "environment", "cost_usd", "unpriced_calls"],
    ("llmops-spend", "Cost by model"): ["time", "model", "cost_usd", "unpriced_calls"],
    ("llmops-spend", "Cost by service"): ["time", "service", "cost_usd", "unpriced_calls"],
    ("llmops-spend", "Cost by team"): ["time", "team", "cost_usd", "unpriced_calls"],
    ("llmops-spend", "Price coverage by provider and source"): [
        "provider",
        "source",
        "calls",
        "tokens",
        "pct_calls_of_provider",
        "pct_tokens_of_provider",
    ],
    ("llmops-spend", "Projected end-of-period spend"): ["budget", "projected_fraction"],
    ("llmops-spend", "Tokens by kind"): [
        "time",
        "input_uncached",
        "input_cached",
        "output_visible",
        "output_reasoning",
    ],
    ("llmops-spend", "Top spenders"): [
        "service",
        "team",
        "model",
        "prompt_name",
        "calls",
        "tokens",
        "cost_usd",
        "unpriced_calls",
        "unpriced_tokens",
    ],
    ("llmops-spend", "Top spenders: users and conversations"): ["kind", "id", "calls", "cost_usd"],
    ("llmops-spend", "Unpriced calls"): ["time", "model", "unpriced_calls"],
    ("llmops-spend", "Unpriced models"): [
        "provider",
        "model",
        "unpriced_calls",
        "input_tokens",
        "output_tokens",
        "first_seen",
        "last_seen",
    ],
}


def _load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def _panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for dash in _load_dashboards():
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append((dash["uid"], panel["title"], target["rawSql"]))
    return out


PANEL_QUERIES = _panel_queries()
RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"] for rule in group["rules"]
]


# ----------------------------------------------------------------------------- the store


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def _ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000


class _Feeder:
    """Runs loadgen traffic and poison records through the real pipeline into the sink."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink
        self.stages = build_call_stages(Settings())
        self.offset = 0
        self.writes = 0

    def _records(self, values: list[bytes]) -> list[SourceRecord]:
        records = [SourceRecord("otlp_spans", 0, self.offset + i, v, "test/0") for i, v in enumerate(values)]
        self.offset += len(values)
        return records

    def _write(self, rows: Any) -> None:
        self.writes += 1
        self.sink.write(rows, token=f"{rows.table}:{self.writes}")

    def loadgen(self, start: datetime, count: int, seed: int, services: tuple[str, ...] | None = None) -> None:
        extra = {"services": services} if services else {}
        with collecting_otlp_sink() as (endpoint, bodies):
            summary = run_loadgen(
                LoadgenOptions(
                    endpoint=endpoint,
                    count=count,
                    seed=seed,
                    start_ns=_ns(start),
                    time_step_ns=int(STEP.total_seconds() * 1e9),
                    **extra,
                )
            )
        assert summary.complete and bodies
        parsed, poison = parse_records(self._records(bodies))
        decoded = decode_parsed(parsed, self.stages)
        assert not poison
        for rows in build_tables(decoded, {}, self.stages, now_ms=_ms(start)):
            self._write(rows)

    def poison(self, at: datetime, count: int) -> None:
        parsed, poison = parse_records(self._records([b"\xff\x00 not protobuf"] * count))
        decoded = decode_parsed(parsed, self.stages)
        assert len(poison) == count and not decoded
        self._write(poison_rows(poison, _ms(at)))


def _insert(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    names = list(rows[0])
    client.insert(table, [[row[n] for n in names] for row in rows], column_names=names)


def _budget(
    budget_id: str, kind: str, value: str, at: datetime, amount: str, spend: str, projected: str, status: str
) -> dict[str, Any]:
    start = datetime(at.year, at.month, at.day, tzinfo=UTC)
    return {
        "computed_at": at,
        "budget_id": budget_id,
        "scope_kind": kind,
        "scope_value": value,
        "period": "day",
        "period_start": start,
        "period_end": start + timedelta(days=1),
        "amount": Decimal(amount),
        "spend": Decimal(spend),
        "fraction": float(Decimal(spend) / Decimal(amount)),
        "projected": Decimal(projected),
        "warn_fraction": 0.8,
        "status": status,
    }


def _drift(
    key: tuple[str, str, str, str],
    end: datetime,
    signal: str,
    statistic: str,
    value: float,
    p: float | None,
    threshold: float,
    drifted: bool,
) -> dict[str, Any]:
    service, model, prompt_name, prompt_version = key
    return {
        "window_start": end - timedelta(minutes=15),
        "window_end": end,
        "service": service,
        "model": model,
        "prompt_name": prompt_name,
        "prompt_version": prompt_version,
        "signal": signal,
        "statistic": statistic,
        "value": value,
        "p_value": p,
        "threshold": threshold,
        "drifted": drifted,
        "n_ref": 500,
        "n_cur": 480,
        "reference": "trailing 24h",
    }


# A service whose requested model fails 30 % of the time for 8 minutes of window 1; in window 2 only
# one bad minute, diluted by the next minute's successes (the error-rate rule's blip).
FLAKY = ("flaky-svc", "commerce", "gpt-4o-mini")


def _flaky_calls() -> list[LLMCall]:
    calls: list[LLMCall] = []

    def add(at: datetime, n: int, failed: int) -> None:
        for i in range(n):
            error = i < failed
            calls.append(
                LLMCall(
                    ts_ns=_ns(at) + i * 1_000_000,
                    trace_id=f"{len(calls):032x}",
                    span_id=f"{len(calls):016x}",
                    service=FLAKY[0],
                    team=FLAKY[1],
                    provider="openai",
                    request_model=FLAKY[2],
                    response_model="" if error else "gpt-4o-mini-2024-07-18",
                    status="error" if error else "ok",
                    input_tokens=0 if error else 100,
                    output_tokens=0 if error else 20,
                    cost=Decimal(0) if error else Decimal("0.000027"),
                )
            )

    for minute in range(8):
        add(W1 + timedelta(minutes=minute), 30, 9)
    add(W2, 60, 18)
    add(W2 + timedelta(minutes=1), 800, 0)
    return calls


CHECKOUT = ("checkout-assistant", "gpt-4o-mini-2024-07-18", "checkout-help", "v7")
SUPPORT = ("support-bot", "claude-sonnet-4-20250514", "support-answer", "v3")


def _agent_and_evaluation_rows(client: Any) -> None:
    """Agent runs (then rows of fewer spans that FINAL must drop), findings (early ones last, so FINAL must go
    by version), spans of two runs, evaluation results and their llm_evaluation_1m rows from its signal."""
    for table in ("agent_runs", "agent_anomalies"):  # keep replaced rows in their parts, as before a merge
        client.command(f"SYSTEM STOP MERGES {table}")
    _insert(client, "agent_runs", AGENT_RUNS)
    _insert(client, "agent_runs", superseded_runs(AGENT_RUNS))
    for finding in ANOMALIES[::-1]:
        _insert(client, "agent_anomalies", [finding])
    _insert(client, "otel_traces", run_spans(W1, AGENT_RUNS[0]))
    _insert(client, "llm_evaluations", EVALUATIONS)
    sink = ClickHouseSink(client, "llmops")
    for rows in evaluation_1m_rows(EVALUATIONS):
        sink.write(rows, f"evaluation-1m-{rows.columns[-2][0]}")


AGENT_RUNS = agent_runs(W1)
ANOMALIES = anomalies(W1, AGENT_RUNS)
EVALUATIONS = evaluation_results(W1)


def _hand_made_rows(client: Any) -> None:
    _agent_and_evaluation_rows(client)
    # Budgets: window 1 has one exceeded budget and one whose burn rate overshoots; window 2 is fine.
    # Users: in window 1 one user is over budget and another one's burn rate overshoots (user budgets have
    # their own rule; the team-wide budget rules leave them out); window 2 is fine.
    at1, at2 = W1_END, W2_END
    _insert(
        client,
        "budget_status",
        [
            _budget("commerce-daily", "team", "commerce", at1, "10", "12.5", "30", "exceeded"),
            _budget("care-daily", "team", "customer-care", at1, "50", "30", "72", "warn"),
            _budget("search-daily", "team", "search", at1, "100", "5", "12", "ok"),
            _budget("commerce-daily", "team", "commerce", at2, "10", "1", "2.4", "ok"),
            _budget("care-daily", "team", "customer-care", at2, "50", "10", "24", "ok"),
            _budget("search-daily", "team", "search", at2, "100", "5", "12", "ok"),
            _budget("user-u1042-daily", "user", "u-1042", at1, "5", "7.5", "18", "exceeded"),
            _budget("user-u2001-daily", "user", "u-2001", at1, "5", "4.5", "40", "warn"),
            _budget("user-u1042-daily", "user", "u-1042", at2, "5", "0.5", "1.2", "ok"),
            _budget("user-u2001-daily", "user", "u-2001", at2, "5", "1", "2.4", "ok"),
        ],
    )
    # Drift: window 1 -- CHECKOUT drifted in its last window; SUPPORT drifted earlier but not in its last window.
    e1, e0 = W1 + timedelta(minutes=5), W1 - timedelta(minutes=10)
    e2 = W2 + timedelta(minutes=2)
    _insert(
        client,
        "llm_drift",
        [
            _drift(CHECKOUT, e1, "answer_length", "ks", 0.31, 1e-9, 0.005, True),
            _drift(CHECKOUT, e1, "answer_length", "wasserstein_norm", 0.42, None, 0.1, True),
            _drift(CHECKOUT, e1, "finish_reason", "jensen_shannon", 0.01, None, 0.05, False),
            _drift(SUPPORT, e0, "refusal", "chi2", 40.0, 1e-7, 0.005, True),
            _drift(SUPPORT, e1, "refusal", "chi2", 0.4, 0.52, 0.005, False),
            _drift(SUPPORT, e1, "retrieval_score", "psi", 0.05, None, 0.2, False),
            _drift(CHECKOUT, e2, "answer_length", "ks", 0.03, 0.7, 0.005, False),
            _drift(CHECKOUT, e2, "answer_length", "wasserstein_norm", 0.02, None, 0.1, False),
        ],
    )
    _insert(
        client,
        "change_events",
        [
            {
                "ts": W1 + timedelta(minutes=1),
                "service": "checkout-assistant",
                "kind": "prompt_version",
                "old_value": "v6",
                "new_value": "v7",
                "model": CHECKOUT[1],
                "prompt_name": "checkout-help",
                "trace_id": "ab" * 16,
                "span_id": "cd" * 8,
            },
            {
                "ts": W1 + timedelta(minutes=3),
                "service": "support-bot",
                "kind": "response_model",
                "old_value": "claude-sonnet-4-20250301",
                "new_value": SUPPORT[1],
                "model": SUPPORT[1],
                "prompt_name": "",
                "trace_id": "ef" * 16,
                "span_id": "01" * 8,
            },
        ],
    )
    # Retrieval spans with OpenInference document scores (loadgen's retrieval spans carry none).
    spans = []
    for i in range(20):
        attrs = {
            "openinference.span.kind": "RETRIEVER",
            "retrieval.documents.0.document.score": str(0.9 - i * 0.01),
            "retrieval.documents.1.document.score": str(0.7 - i * 0.01),
            "retrieval.documents.1.document.id": "doc-7",
        }
        spans.append(
            {
                "Timestamp": W1 + timedelta(seconds=15 * i),
                "TraceId": f"{i:032x}",
                "SpanId": f"{i:016x}",
                "SpanName": "retrieve",
                "SpanKind": "Internal",
                "ServiceName": "search-rag",
                "SpanAttributes": attrs,
                "Duration": 40_000_000,
                "StatusCode": "Ok",
                "_ingest_source": "hand/0",
                "_ingest_offset": i,
            }
        )
    _insert(client, "otel_traces", spans)
    # A key whose TTFT is far over its SLO (9-11 s against 4 s), in window 1 only.
    rng = np.random.default_rng(3)
    values = rng.uniform(9000.0, 11000.0, 60)
    starts = np.full(60, int(W1_END.timestamp()) // 60 * 60 - 60, dtype=np.int64)
    rows = metric_rows(starts, np.zeros(60, dtype=np.int64), [SLOW], "ttft_ms", values)
    client.insert("llm_latency_1m", rows.column_data(), column_names=list(rows.column_names), column_oriented=True)
    # Window 2: the slow key again for one minute, then enough fast streams to bring p95 under the SLO.
    blip = np.concatenate([rng.uniform(9000.0, 11000.0, 25), rng.uniform(200.0, 400.0, 600)])
    minute = int((W2 + timedelta(minutes=3)).timestamp()) // 60 * 60
    starts = np.concatenate([np.full(25, minute), np.full(600, minute + 120)]).astype(np.int64)
    rows = metric_rows(starts, np.zeros(blip.size, dtype=np.int64), [SLOW], "ttft_ms", blip)
    client.insert("llm_latency_1m", rows.column_data(), column_names=list(rows.column_names), column_oriented=True)
    usage = usage_rows(_flaky_calls())
    client.insert("llm_usage_1m", usage.columns, column_names=usage.column_names, column_oriented=True)


# Calls with users and conversations (loadgen sends none), through the sink into llm_calls and so into
# llm_top_spenders_1h: window 1, one service of their own, 40 users with Zipf-like call counts, unpriced ones.
USERS_SERVICE = "accounts-bot"


def _user_calls() -> list[LLMCall]:
    rng = np.random.default_rng(19)
    users = rng.choice(40, size=600, p=(w := 1 / np.arange(1, 41) ** 1.3) / w.sum())
    return [
        LLMCall(
            ts_ns=_ns(W1) + int(i * STEP.total_seconds() * 1e9 * W1_CALLS / 600),
            trace_id=f"{0xACC0 + i:032x}",
            span_id=f"{i:016x}",
            service=USERS_SERVICE,
            environment="production",
            team="customer-care",
            provider="openai",
            request_model="gpt-4o-mini",
            response_model="gpt-4o-mini-2024-07-18",
            user_id=f"user-{user}",
            conversation_id=f"conv-{user}-{i % 3}",
            cost=None if i % 25 == 0 else Decimal(int(rng.integers(1, 10**9))).scaleb(-12),
        )
        for i, user in enumerate(users)
    ]


def _write_user_calls(feeder: _Feeder) -> None:
    rows = call_rows(_user_calls())
    rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    rows.columns.extend([["users/0"] * len(rows), [0] * len(rows)])
    feeder._write(rows)


@pytest.fixture(scope="module")
def dash_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One chDB store for the module (a process opens one chDB path at a time)."""
    client = connect(f"chdb://{tmp_path_factory.mktemp('dash-chdb')}", "llmops", create_database=True)
    try:
        apply_migrations(client, "llmops")
        feeder = _Feeder(ClickHouseSink(client, "llmops"))
        feeder.loadgen(W1, W1_CALLS, seed=11)
        feeder.loadgen(W2, W2_CALLS, seed=12, services=("checkout-assistant",))
        feeder.poison(W1 + timedelta(minutes=4), 15)
        _hand_made_rows(client)
        _write_user_calls(feeder)
        yield client
    finally:
        client.close()


# ----------------------------------------------------------------------------- dashboards


def _variables(selection: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Variable]:
    selection = selection or {}
    return {name: Variable(name, selection.get(name, (ALL,))) for name in ("service", "environment", "team", "model")}


RANGE_W1 = TimeRange(W1 - timedelta(minutes=30), W1_END + timedelta(minutes=5), timedelta(minutes=1))


def _run(client: Any, sql: str) -> Any:
    return client.query(sql)


def _columns(client: Any, sql: str) -> list[tuple[str, str]]:
    """Names and types of a query's result, also when it has no rows (DESCRIBE of the subquery)."""
    return [(r[0], r[1]) for r in client.query(f"DESCRIBE ({sql})").result_rows]


def test_store_holds_both_windows_of_loadgen_traffic(dash_store: Any) -> None:
    rows = dash_store.query(
        "SELECT toDate(ts) AS d, count(), uniqExact(service) FROM llm_calls WHERE user_id = '' GROUP BY d ORDER BY d"
    ).result_rows
    assert [(r[1], r[2]) for r in rows] == [(W1_CALLS, 3), (W2_CALLS, 1)]


@pytest.mark.parametrize(("uid", "title", "sql"), PANEL_QUERIES, ids=[f"{u}:{t}" for u, t, _ in PANEL_QUERIES])
def test_panel_query_runs_with_all_selected(dash_store: Any, uid: str, title: str, sql: str) -> None:
    rendered = render_panel_query(sql, _variables(), RANGE_W1)
    assert [name for name, _ in _columns(dash_store, rendered)] == EXPECTED_COLUMNS[(uid, title)]
    assert _run(dash_store, rendered).result_rows, f"{uid} / {title}: no rows although window 1 has data for it"


SELECTION = {
    "service": ("support-bot",),
    "environment": ("production",),
    "team": ("customer-care",),
    "model": ("claude-sonnet-4-20250514", "gemini-2.5-flash"),
}


@pytest.mark.parametrize(("uid", "title", "sql"), PANEL_QUERIES, ids=[f"{u}:{t}" for u, t, _ in PANEL_QUERIES])
def test_panel_query_runs_with_a_selection(dash_store: Any, uid: str, title: str, sql: str) -> None:
    rendered = render_panel_query(sql, _variables(SELECTION), RANGE_W1)
    assert "'claude-sonnet-4-20250514','gemini-2.5-flash'" in rendered
    _run(dash_store, rendered)
    assert [name for name, _ in _columns(dash_store, rendered)] == EXPECTED_COLUMNS[(uid, title)]


def test_selection_filters_what_the_panels_show(dash_store: Any) -> None:
    """Cost by service with support-bot selected equals support-bot's cost in llm_calls, to the cent fraction."""
    sql = next(s for u, t, s in PANEL_QUERIES if (u, t) == ("llmops-spend", "Cost by service"))
    variables = _variables({"service": ("support-bot",)})
    rows = _run(dash_store, render_panel_query(sql, variables, RANGE_W1)).result_rows
    assert {r[1] for r in rows} == {"support-bot"}
    expected = dash_store.query(
        "SELECT sum(cost) FROM llm_calls WHERE service = 'support-bot' AND toDate(ts) = '2026-03-02'"
    ).result_rows[0][0]
    assert sum((Decimal(r[2]) for r in rows), Decimal(0)) == Decimal(expected)


def test_top_spenders_panel_shows_the_heaviest_users_and_conversations_at_their_exact_cost(dash_store: Any) -> None:
    """Users and conversations: the ten heaviest of the hand-made calls (summed here, in Decimal), in order,
    each with its exact cost and call count; a team selection that excludes them empties the panel."""
    sql = next(s for u, t, s in PANEL_QUERIES if (u, t) == ("llmops-spend", "Top spenders: users and conversations"))
    rows = _run(dash_store, render_panel_query(sql, _variables(), RANGE_W1)).result_rows
    calls = _user_calls()
    for kind, field in (("user", "user_id"), ("conversation", "conversation_id")):
        cost: dict[str, Decimal] = {}
        count: dict[str, int] = {}
        for call in calls:
            key = getattr(call, field)
            count[key] = count.get(key, 0) + 1
            if call.cost is not None:
                cost[key] = cost.get(key, Decimal(0)) + call.cost
        expected = sorted(cost, key=lambda key: (-cost[key], key))[:10]
        shown = [(r[1], r[2], Decimal(r[3])) for r in rows if r[0] == kind]
        assert shown == [(key, count[key], cost[key]) for key in expected]
    assert [r[0] for r in rows] == ["user"] * 10 + ["conversation"] * 10
    elsewhere = render_panel_query(sql, _variables({"team": ("search",)}), RANGE_W1)
    assert not _run(dash_store, elsewhere).result_rows


def test_latency_panel_percentiles_come_from_merged_sketches(dash_store: Any) -> None:
    """The range table's TTFT p95 per model is within the sketch's 1 % of numpy's p95 of llm_calls.ttft_ms."""
    sql = next(s for u, t, s in PANEL_QUERIES if (u, t) == ("llmops-latency", "Percentiles over the range"))
    rows = _run(dash_store, render_panel_query(sql, _variables(), RANGE_W1)).named_results()
    checked = 0
    for row in rows:
        if row["metric"] != "ttft_ms" or row["request_model"] == SLOW[4] or row["samples"] < 30:
            continue
        values = [
            v
            for (v,) in dash_store.query(
                "SELECT ttft_ms FROM llm_calls WHERE request_model = {m:String} AND provider = {p:String} "
                "AND ttft_ms IS NOT NULL AND toDate(ts) = '2026-03-02'",
                parameters={"m": row["request_model"], "p": row["provider"]},
            ).result_rows
        ]
        assert len(values) == row["samples"]
        reference = float(np.quantile(values, 0.95, method="lower"))
        assert abs(row["p95"] - reference) <= 0.0101 * reference
        checked += 1
    assert checked >= 2


def test_variable_and_annotation_queries_run(dash_store: Any) -> None:
    for dash in _load_dashboards():
        for var in dash["templating"]["list"]:
            rows = _run(dash_store, render_panel_query(var["query"]["rawSql"], _variables(), RANGE_W1)).result_rows
            assert rows, f"{dash['uid']}: variable {var['name']} offers nothing"
        for annotation in dash["annotations"]["list"]:
            if "target" not in annotation:
                continue
            result = _run(dash_store, render_panel_query(annotation["target"]["rawSql"], _variables(), RANGE_W1))
            assert list(result.column_names) == ["time", "text", "tags"]
            assert len(result.result_rows) == 2
    teams = {
        r[0]
        for r in _run(
            dash_store,
            render_panel_query(
                _load_dashboards()[0]["templating"]["list"][2]["query"]["rawSql"], _variables(), RANGE_W1
            ),
        ).result_rows
    }
    assert teams == {"commerce", "customer-care", "search"}


# ----------------------------------------------------------------------------- alert rules


def _firing_labels(firing: Iterable[frozenset[tuple[str, str]]], *keys: str) -> set[tuple[str, ...]]:
    return {tuple(dict(labels)[k] for k in keys) for labels in firing}


def _rule(uid: str) -> dict[str, Any]:
    return next(r for r in RULES if r["uid"] == uid)


def _group_interval(uid: str) -> str:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return next(g["interval"] for g in groups if any(r["uid"] == uid for r in g["rules"]))


# uid -> (end of the firing history, expected Alerting instances as label tuples, label names,
#         end of the quiet history).
# Each rule is evaluated every group interval over the `for` duration plus 10 minutes before each end.
SCENARIOS: dict[str, tuple[datetime, set[tuple[str, ...]], tuple[str, ...], datetime]] = {
    "llmops-budget-exceeded": (
        W1_END + timedelta(minutes=2),
        {("commerce-daily", "commerce", "critical")},
        ("budget_id", "team", "severity"),
        W2_END + timedelta(minutes=2),
    ),
    "llmops-budget-burn-rate": (
        W1_END + timedelta(minutes=20),
        {("care-daily", "customer-care", "warning")},
        ("budget_id", "team", "severity"),
        W2_END + timedelta(minutes=20),
    ),
    "llmops-unpriced-models": (
        W1_END + timedelta(minutes=2),
        {("support-bot", "customer-care", "acme-llama-ft-v3")},
        ("service", "team", "model"),
        W2_END + timedelta(minutes=2),
    ),
    "llmops-ttft-p95-slo": (
        W1_END + timedelta(minutes=8),
        {("slow-svc", "platform", SLOW[4])},
        ("service", "team", "model"),
        W2_END + timedelta(minutes=8),
    ),
    "llmops-error-rate": (
        W1 + timedelta(minutes=9),
        {(FLAKY[0], FLAKY[1], FLAKY[2])},
        ("service", "team", "model"),
        W2 + timedelta(minutes=9),
    ),
    "llmops-drift-detected": (
        W1 + timedelta(minutes=20),
        {("checkout-assistant", "commerce", CHECKOUT[1], "v7")},
        ("service", "team", "model", "prompt_version"),
        W2 + timedelta(minutes=20),
    ),
    "llmops-data-freshness": (
        W2_END + timedelta(hours=1),
        {("checkout-assistant", "commerce", "all")},
        ("service", "team", "model"),
        W2_END + timedelta(minutes=9),
    ),
    "llmops-ingest-errors": (
        W1 + timedelta(minutes=8),
        {("decode", "platform", "warning")},
        ("stage", "team", "severity"),
        W2 + timedelta(minutes=8),
    ),
    "llmops-dead-letters": (
        W1 + timedelta(minutes=8),
        {("otlp_spans", "platform", "critical")},
        ("topic", "team", "severity"),
        W2 + timedelta(minutes=8),
    ),
    "llmops-user-budget-exceeded": (
        W1_END + timedelta(minutes=2),
        {("user-u1042-daily", "u-1042", "warning")},
        ("budget_id", "user_id", "severity"),
        W2_END + timedelta(minutes=2),
    ),
    "llmops-evaluation-score-drop": (
        W1 + timedelta(minutes=20),
        {("support-bot", "helpfulness", "v3"), ("checkout-assistant", "helpfulness", "v8")},
        ("service", "evaluator", "prompt_version"),
        W2 + timedelta(minutes=20),
    ),
    "llmops-runaway-agent": (
        W1 + timedelta(minutes=10),
        {("support-bot", "tool_loop", "customer-care"), ("checkout-assistant", "cost", "commerce")},
        ("service", "kind", "team"),
        W2 + timedelta(minutes=10),
    ),
}
# Rules whose quiet history holds the condition for less than `for`: Pending there, never Alerting.
BLIPS = {
    "llmops-ttft-p95-slo": ("slow-svc", SLOW[4]),
    "llmops-error-rate": (FLAKY[0], FLAKY[2]),
    "llmops-evaluation-score-drop": (KEYS["checkout_v7"].service, KEYS["checkout_v7"].model),
}


def _run_rule(client: Any, uid: str, end: datetime) -> RuleRun:
    rule = _rule(uid)
    start = end - parse_duration(rule["for"]) - timedelta(minutes=10)
    return run_rule(client, rule, start, end, _group_interval(uid))


def test_every_rule_has_a_scenario() -> None:
    assert {r["uid"] for r in RULES} == set(SCENARIOS)


@pytest.mark.parametrize("uid", sorted(SCENARIOS))
def test_alert_rule_fires_in_its_history_and_stays_silent_in_the_quiet_one(dash_store: Any, uid: str) -> None:
    """Report per rule: fires where it should (after holding for its `for`), silent where it should."""
    rule = _rule(uid)
    fire_end, expected, keys, quiet_end = SCENARIOS[uid]
    fired = _run_rule(dash_store, uid, fire_end)
    alerting = _firing_labels(fired.alerting(), *keys)
    # The error-rate rule also fires for loadgen keys whose random failures pass 5 % (checked exactly
    # against llm_calls in test_error_rate_rule_fires_for_exactly_the_keys_whose_calls_fail).
    assert alerting == expected or (uid == "llmops-error-rate" and expected < alerting), fired.alerting()
    hold = parse_duration(rule["for"])
    for labels, first_alerting in fired.fired.items():
        names = dict(labels)
        assert all(names.get(k) for k in ("team", "service", "model", "severity")), names
        # Pending for the whole `for` duration before Alerting (the condition held that long).
        first_pending = min(e.at for e in fired.evaluations if e.holds.get(labels))
        assert first_alerting - first_pending >= hold
        if hold:
            assert first_alerting - first_pending < hold + parse_duration(_group_interval(uid))
    quiet = _run_rule(dash_store, uid, quiet_end)
    assert not quiet.fired, quiet.fired
    if uid in BLIPS:  # the condition did hold in the quiet history, for less than `for`
        assert BLIPS[uid] in _firing_labels(quiet.ever_pending(), "service", "model")


def _error_rate_oracle(client: Any, end: datetime) -> set[tuple[str, str, str]]:
    """(service, team, requested model) whose failed share over 15 minutes was above 5 % with at least 50
    calls at every minute of the last 5: computed from llm_calls and the hand-made calls themselves,
    not from the llm_usage_1m partials the rule reads."""
    stored = client.query(
        "SELECT toUnixTimestamp(toStartOfMinute(ts)), service, team, if(request_model = '', response_model, "
        "request_model), status = 'error' FROM llm_calls"
    ).result_rows
    calls = stored + [
        ((c.ts_ns // 60_000_000_000) * 60, c.service, c.team, c.request_model, c.status == "error")
        for c in _flaky_calls()
    ]
    held: set[tuple[str, str, str]] | None = None
    for minutes in range(6):
        at = int((end - timedelta(minutes=minutes)).timestamp())
        totals: dict[tuple[str, str, str], list[int]] = {}
        for minute, service, team, model, failed in calls:
            if at - 900 <= minute <= at:
                entry = totals.setdefault((service, team, model), [0, 0])
                entry[0] += 1
                entry[1] += failed
        now = {k for k, (n, e) in totals.items() if n >= 50 and e / n > 0.05}
        held = now if held is None else held & now
    return held or set()


def test_error_rate_rule_fires_for_exactly_the_keys_whose_calls_fail(dash_store: Any) -> None:
    end = SCENARIOS["llmops-error-rate"][0]
    fired = _run_rule(dash_store, "llmops-error-rate", end)
    expected = _error_rate_oracle(dash_store, end)
    assert (FLAKY[0], FLAKY[1], FLAKY[2]) in expected
    assert _firing_labels(fired.alerting(), "service", "team", "model") == expected
    assert not _error_rate_oracle(dash_store, SCENARIOS["llmops-error-rate"][3])


def test_for_duration_is_what_keeps_a_blip_silent(dash_store: Any) -> None:
    """The evaluator can fail: the same quiet history fires once `for` is taken away."""
    for uid in BLIPS:
        rule = dict(_rule(uid), **{"for": "0s"})
        end = SCENARIOS[uid][3]
        run = run_rule(dash_store, rule, end - timedelta(minutes=15), end)
        assert BLIPS[uid] in _firing_labels(run.fired, "service", "model")


def test_freshness_pages_when_nothing_arrives_at_all(dash_store: Any) -> None:
    """No span in the rule's 6-hour range is NoData, and NoData pages for this rule only."""
    at = W2_END + timedelta(hours=7)
    assert _run_rule(dash_store, "llmops-data-freshness", at).fired
    assert not _run_rule(dash_store, "llmops-dead-letters", at).fired


def test_ttft_values_are_p95_over_slo(dash_store: Any) -> None:
    """The slow key's value is its sketch p95 over the 4 s Claude SLO: numpy's p95 of the same values within 1 %."""
    firing = evaluate_once(dash_store, _rule("llmops-ttft-p95-slo"), W1_END + timedelta(minutes=1))
    (value,) = [v for labels, v in firing.values.items() if dict(labels)["service"] == "slow-svc"]
    reference = float(np.quantile(np.random.default_rng(3).uniform(9000.0, 11000.0, 60), 0.95, method="lower")) / 4000
    assert abs(value - reference) <= 0.0101 * reference


_TEMPLATE_REF = re.compile(r"\$(labels|values)\.(\w+)")


@pytest.mark.parametrize("uid", sorted(SCENARIOS))
def test_alert_annotations_say_what_broke_how_much_where_and_link_the_panel(uid: str) -> None:
    """Summary: the value against the threshold and the key; labels carry the key; the link opens the
    panel over the rule's own time range."""
    rule = _rule(uid)
    annotations = rule["annotations"]
    summary = annotations["summary"]
    threshold = rule["data"][2]["model"]["conditions"][0]["evaluator"]["params"][0]
    assert "$values.B.Value" in summary and "threshold" in summary, summary
    shown = {"0": "0", "1": "1", "0.05": "5 %", "0.1": "0.1", "600": "10m", "10": "10"}[str(threshold)]
    assert shown in summary.split("threshold")[1], (uid, summary)
    if rule["for"] not in ("0s", 0):
        held = re.search(r"held for (\d+) min", summary)
        assert held, (uid, summary)
        assert parse_duration(rule["for"]) == parse_duration(held.group(1) + "m")
    query_sql = rule["data"][0]["model"]["rawSql"]
    for kind, name in _TEMPLATE_REF.findall(summary):
        if kind == "labels":
            assert name in rule["labels"] or re.search(rf"\b{name}\b", query_sql), (uid, name)
    key_labels = {"service", "model", "team"} & set(re.findall(r"\$labels\.(\w+)", summary))
    assert key_labels or "stage" in summary or "topic" in summary or "budget_id" in summary, summary
    assert {"team", "service", "model", "severity"} <= set(rule["labels"])
    url = annotations["runbook_url"]
    span = rule["data"][0]["relativeTimeRange"]["from"]
    assert url.startswith(f"/d/{annotations['__dashboardUid__']}/") and f"viewPanel={annotations['__panelId__']}" in url
    window = {600: "10m", 900: "15m", 3600: "1h", 7200: "2h", 21600: "6h", 86400: "24h"}[span]
    assert f"from=now-{window}&to=now" in url
    dashboard = next(d for d in _load_dashboards() if d["uid"] == annotations["__dashboardUid__"])
    assert int(annotations["__panelId__"]) in {p["id"] for p in dashboard["panels"]}


# ----------------------------------------------------------------------------- agents and evaluations
# Expected values come from the hand-made lists (AGENT_RUNS, ANOMALIES, EVALUATIONS), never from the tables.


def _panel(client: Any, uid: str, title: str, selection: Mapping[str, tuple[str, ...]] | None = None) -> list[Any]:
    sql = next(s for u, t, s in PANEL_QUERIES if (u, t) == (uid, title))
    return list(_run(client, render_panel_query(sql, _variables(selection), RANGE_W1)).named_results())


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _in_w1(t: datetime) -> bool:
    return RANGE_W1.start <= t <= RANGE_W1.end


def _series(run: dict[str, Any]) -> str:
    return f"{run['service']} / {run['root_agent'] or '(no agent)'}"


W1_RUNS = [r for r in AGENT_RUNS if _in_w1(r["start_ts"])]


def test_agent_run_panels_count_each_run_once_from_its_complete_row(dash_store: Any) -> None:
    """Runs per minute, calls per run, tool calls by name and the MCP share equal the complete runs' own
    counts: the superseded rows of fewer spans (another minute, other counts) are not read."""
    runs = {
        (_utc(r["time"]), r["series"]): r["runs_per_min"]
        for r in _panel(dash_store, "llmops-agents", "Runs per minute by service and root agent")
    }
    expected: dict[tuple[datetime, str], float] = {}
    for run in W1_RUNS:
        key = (_minute(run["start_ts"]), _series(run))
        expected[key] = expected.get(key, 0) + 1.0
    assert runs == expected and len({s for _, s in expected}) == 4

    per_run = {
        _utc(r["time"]): (r["llm_calls_per_run"], r["tool_calls_per_run"])
        for r in _panel(dash_store, "llmops-agents", "LLM calls and tool calls per run")
    }
    minutes = sorted({_minute(r["start_ts"]) for r in W1_RUNS})
    for minute in minutes:
        of = [r for r in W1_RUNS if _minute(r["start_ts"]) == minute]
        assert per_run[minute] == pytest.approx(
            (np.mean([r["llm_calls"] for r in of]), np.mean([r["tool_calls"] for r in of])), rel=1e-12
        )
    assert set(per_run) == set(minutes)

    tools = {
        (_utc(r["time"]), r["tool"]): r["tool_calls"]
        for r in _panel(dash_store, "llmops-agents", "Tool calls by tool name")
    }
    expected_tools: dict[tuple[datetime, str], int] = {}
    for run in W1_RUNS:
        for name, n in run["tool_calls_by_name"].items():
            key = (_minute(run["start_ts"]), name)
            expected_tools[key] = expected_tools.get(key, 0) + n
    assert tools == expected_tools and "mcp.files/read" in {t for _, t in tools}

    mcp = {
        (_utc(r["time"]), r["service"]): r["mcp_share"]
        for r in _panel(dash_store, "llmops-agents", "MCP share of tool calls")
    }
    for (minute, service), share in mcp.items():
        of = [r for r in W1_RUNS if _minute(r["start_ts"]) == minute and r["service"] == service]
        calls = sum(r["tool_calls"] for r in of)
        assert share == (None if calls == 0 else pytest.approx(sum(r["mcp_tool_calls"] for r in of) / calls, rel=1e-12))
    assert len(mcp) == len({(_minute(r["start_ts"]), r["service"]) for r in W1_RUNS})


def test_cost_per_run_percentiles_are_numpys_over_the_exactly_priced_runs(dash_store: Any) -> None:
    """p50/p90/p99 per minute: numpy's (linear) percentiles of the exact cost of runs without unpriced calls,
    a run without LLM calls at $0; runs with unpriced calls are counted apart, never as $0."""
    rows = {_utc(r["time"]): r for r in _panel(dash_store, "llmops-agents", "Cost per run p50 / p90 / p99")}
    assert {r["cost"] is None and r["llm_calls"] == 0 for r in W1_RUNS} == {True, False}  # both cases are in the data
    assert any(r["unpriced_calls"] and r["cost"] is not None for r in W1_RUNS)
    assert any(r["unpriced_calls"] and r["cost"] is None for r in W1_RUNS)
    for minute in sorted({_minute(r["start_ts"]) for r in W1_RUNS}):
        of = [r for r in W1_RUNS if _minute(r["start_ts"]) == minute]
        priced = [float(r["cost"] or 0) for r in of if r["unpriced_calls"] == 0]
        row = rows.pop(minute)
        assert row["unpriced_runs"] == len(of) - len(priced)
        if not priced:
            assert (row["p50"], row["p90"], row["p99"]) == (None, None, None)
            continue
        reference = np.quantile(priced, [0.5, 0.9, 0.99])
        assert [row["p50"], row["p90"], row["p99"]] == pytest.approx(list(reference), rel=1e-12, abs=1e-15)
    assert not rows


def _ranked(key: Any) -> list[dict[str, Any]]:
    return sorted(W1_RUNS, key=key)[:20]


def test_slowest_and_most_expensive_runs_rank_complete_rows(dash_store: Any) -> None:
    slowest = _panel(dash_store, "llmops-agents", "Slowest runs")
    expected = _ranked(lambda r: (-r["duration_ms"], r["trace_id"]))
    assert [(r["trace_id"], r["duration_ms"]) for r in slowest] == [(r["trace_id"], r["duration_ms"]) for r in expected]
    costly = _panel(dash_store, "llmops-agents", "Most expensive runs")
    expected = _ranked(lambda r: (r["cost"] is None, -(r["cost"] or 0), -r["unpriced_calls"], r["trace_id"]))
    assert [(r["trace_id"], r["cost_usd"], r["unpriced_calls"]) for r in costly] == [
        (r["trace_id"], r["cost"], r["unpriced_calls"]) for r in expected
    ]
    assert all(isinstance(r["cost_usd"], Decimal) for r in costly if r["cost_usd"] is not None)  # exact, not floats


def _final_findings() -> dict[tuple[str, str, str], dict[str, Any]]:
    """Each finding (run, kind, subject) at its highest version: what FINAL reads."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in ANOMALIES:
        key = (f["trace_id"], f["kind"], f["subject"])
        if key not in out or f["version"] > out[key]["version"]:
            out[key] = f
    return out


def test_runaway_panels_show_each_finding_in_its_final_version(dash_store: Any) -> None:
    final = _final_findings()
    by_kind = {
        (_utc(r["time"]), r["kind"]): r["findings"]
        for r in _panel(dash_store, "llmops-agents", "Runaway findings by kind")
    }
    expected: dict[tuple[datetime, str], int] = {}
    for f in final.values():
        if _in_w1(f["first_ts"]):
            key = (_minute(f["first_ts"]), f["kind"])
            expected[key] = expected.get(key, 0) + 1
    assert by_kind == expected
    newest = _panel(dash_store, "llmops-agents", "Newest runaway findings")
    shown = [f for f in final.values() if _in_w1(f["detected_at"])]
    shown.sort(key=lambda f: (-f["detected_at"].timestamp(), f["trace_id"], f["kind"], f["subject"]))
    assert [(r["trace_id"], r["kind"], r["subject"], r["count"], r["final"], r["cost_usd"]) for r in newest] == [
        (f["trace_id"], f["kind"], f["subject"], f["count"], f["final"], f["cost"]) for f in shown
    ]
    assert [r["count"] for r in newest if r["subject"] == "search_docs 9f2c"] == [9]  # the final one, not the early 5


def test_agent_panels_follow_the_service_selection(dash_store: Any) -> None:
    rows = _panel(
        dash_store, "llmops-agents", "Runs per minute by service and root agent", {"service": ("support-bot",)}
    )
    assert {r["series"] for r in rows} == {"support-bot / triage", "support-bot / refund-agent"}
    assert sum(r["runs_per_min"] for r in rows) == sum(r["service"] == "support-bot" for r in W1_RUNS)
    rows = _panel(dash_store, "llmops-agents", "Newest runaway findings", {"team": ("commerce",)})
    assert {r["service"] for r in rows} == {"checkout-assistant"}


def _trace_links() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for dash in _load_dashboards():
        for panel in dash["panels"]:
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "links":
                        out += [(panel["title"], link) for link in prop["value"]]
    return out


def test_trace_links_open_the_spans_of_the_run(dash_store: Any) -> None:
    """The trace id of every run and finding table opens the run's spans in Grafana's trace view: the
    link's query, with the clicked value in place, returns exactly the trace's spans (the HTTP span
    around the run too) in the columns the trace view reads, also for a run still open."""
    links = _trace_links()
    assert {title for title, _ in links} == {"Newest runaway findings", "Slowest runs", "Most expensive runs"}
    spans = run_spans(W1, AGENT_RUNS[0])
    for _, link in links:
        query = link["internal"]["query"]
        for trace in (AGENT_RUNS[0]["trace_id"], OPEN_RUN_TRACE):
            result = _run(dash_store, query["rawSql"].replace("${__value.raw}", trace))
            assert list(result.column_names)[:7] == [
                "traceID", "spanID", "parentSpanID", "serviceName", "operationName", "startTime", "duration",
            ]  # fmt: skip
            rows = list(result.named_results())
            sent = [s for s in spans if s["TraceId"] == trace]
            assert sorted(r["spanID"] for r in rows) == sorted(s["SpanId"] for s in sent)
            by_id = {s["SpanId"]: s for s in sent}
            for row in rows:
                span = by_id[row["spanID"]]
                assert row["parentSpanID"] == span["ParentSpanId"] and row["operationName"] == span["SpanName"]
                assert row["startTime"] == pytest.approx(span["Timestamp"].timestamp() * 1000, abs=1e-3)
                assert row["duration"] == pytest.approx(span["Duration"] / 1e6)
                assert {t["key"]: t["value"] for t in row["tags"]} == span["SpanAttributes"]
        assert not _run(dash_store, query["rawSql"].replace("${__value.raw}", "f" * 32)).result_rows


def _eval_rows_in_w1() -> list[dict[str, Any]]:
    return [r for r in EVALUATIONS if _in_w1(_minute(r["ts"]))]


def _eval_series(r: dict[str, Any]) -> str:
    return f"{r['evaluator']} / {r['service']} / {r['prompt_name']}@{r['prompt_version']}"


def test_evaluation_panels_match_the_results(dash_store: Any) -> None:
    """Mean score, count and label shares per minute from llm_evaluation_1m (two partial rows
    per minute and key), percentiles from llm_evaluations: all against the results themselves."""
    results = _eval_rows_in_w1()
    groups: dict[tuple[datetime, str], list[float]] = {}
    for r in results:
        if r["score_value"] is not None:
            groups.setdefault((_minute(r["ts"]), _eval_series(r)), []).append(r["score_value"])
    means = {
        (_utc(r["time"]), r["series"]): r["mean_score"]
        for r in _panel(dash_store, "llmops-quality", "Evaluation score mean by evaluator and prompt version")
    }
    assert means == pytest.approx({k: float(np.mean(v)) for k, v in groups.items()}, rel=1e-12)

    counts: dict[tuple[datetime, str], int] = {}
    labels: dict[tuple[datetime, str], dict[str, int]] = {}
    for r in results:
        key = (_minute(r["ts"]), r["evaluator"])
        counts[key] = counts.get(key, 0) + 1
        if r["score_label"]:
            labels.setdefault(key, {}).setdefault(r["score_label"], 0)
            labels[key][r["score_label"]] += 1
    got = {
        (_utc(r["time"]), r["evaluator"]): r["evaluations"]
        for r in _panel(dash_store, "llmops-quality", "Evaluations per evaluator")
    }
    assert got == counts
    shares = {
        (_utc(r["time"]), r["series"]): r["share"]
        for r in _panel(dash_store, "llmops-quality", "Evaluation label shares")
    }
    expected = {
        (minute, f"{evaluator}: {label}"): n / sum(of.values())
        for (minute, evaluator), of in labels.items()
        for label, n in of.items()
    }
    assert shares == pytest.approx(expected, rel=1e-12) and any("unsupported" in s for _, s in shares)

    table = _panel(dash_store, "llmops-quality", "Evaluation score percentiles")
    scores: dict[tuple[str, ...], list[float]] = {}
    for r in EVALUATIONS:
        if r["score_value"] is not None and _in_w1(r["ts"]):
            dims = (r["evaluator"], r["service"], r["model"], r["prompt_name"], r["prompt_version"])
            scores.setdefault(dims, []).append(r["score_value"])
    assert [
        tuple(r[c] for c in ("evaluator", "service", "model", "prompt_name", "prompt_version")) for r in table
    ] == sorted(scores)
    for row in table:
        values = scores[tuple(row[c] for c in ("evaluator", "service", "model", "prompt_name", "prompt_version"))]
        assert row["scored"] == len(values)
        assert [row["mean_score"], row["p10"], row["p50"], row["p90"]] == pytest.approx(
            [float(np.mean(values)), *np.quantile(values, [0.1, 0.5, 0.9])], rel=1e-12
        )


def test_score_drop_is_the_reference_mean_minus_the_last_15_minutes_mean(dash_store: Any) -> None:
    """The rule's value per prompt version, from the results: reference = the evaluator, service and prompt
    name (every model and version) in the 24 h before the last 15 minutes."""
    at = SCENARIOS["llmops-evaluation-score-drop"][0]
    values = {
        (dict(k)["evaluator"], dict(k)["service"], dict(k)["prompt_version"]): v
        for k, v in evaluate_once(dash_store, _rule("llmops-evaluation-score-drop"), at).values.items()
    }
    cut = at - timedelta(minutes=15)
    expected = {}
    for key in KEYS.values():
        same_prompt = [
            r
            for r in EVALUATIONS
            if r["score_value"] is not None
            and (r["evaluator"], r["service"], r["prompt_name"]) == (key.evaluator, key.service, key.prompt_name)
        ]
        current = [
            r["score_value"]
            for r in same_prompt
            if r["prompt_version"] == key.prompt_version and cut <= _minute(r["ts"]) <= at
        ]
        reference = [r["score_value"] for r in same_prompt if at - timedelta(hours=24) <= _minute(r["ts"]) < cut]
        if len(current) >= 20 and len(reference) >= 20:
            expected[(key.evaluator, key.service, key.prompt_version)] = float(np.mean(reference) - np.mean(current))
    assert values == pytest.approx(expected, rel=1e-9)
    # conciseness dropped most, with too few results to judge: no instance at all
    assert len(values) == 4 and ("conciseness", "support-bot", "v3") not in values


def test_runaway_value_is_the_runs_with_a_finding(dash_store: Any) -> None:
    at = SCENARIOS["llmops-runaway-agent"][0]
    values = {
        (dict(k)["service"], dict(k)["kind"]): v
        for k, v in evaluate_once(dash_store, _rule("llmops-runaway-agent"), at).values.items()
    }
    recent = {key: f for key, f in _final_findings().items() if at - timedelta(minutes=15) <= f["detected_at"] <= at}
    expected: dict[tuple[str, str], set[str]] = {}
    for (trace, kind, _), f in recent.items():
        expected.setdefault((f["service"], kind), set()).add(trace)
    assert values == {k: len(v) for k, v in expected.items()} and values[("support-bot", "tool_loop")] == 2
