"""Hand-made agent runs, runaway findings, their spans and evaluation results for the dashboard tests.

Why: the Agents dashboard, the evaluation panels of Quality and drift and their alert rules read
tables the stream fills (agent_runs, agent_anomalies, llm_evaluations, llm_evaluation_1m); the
dashboard tests insert known rows, as they do for budget_status and llm_drift, and compute every
expected panel value from these lists, not from the tables.

Timeline: window 1 starts at `w1` (tests/test_dashboard_queries.py's W1), window 2 one day later.
Agent runs start in the first five minutes of each window. Evaluation results: a reference of one
window every 10 minutes over the 12 hours before each window, then one window per minute for 20
minutes in which some keys drop (window 1) or blip for one minute (window 2).

`llm_evaluation_1m` rows are made from the same results by the table's own signal
(`evaluation_1m_rows`), as the worker makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from processors.core.evaluation_scores import EVALUATION_SCORES
from processors.core.evaluations import Evaluation
from processors.core.signal import signal_rows
from processors.core.tables import TableRows

EVALUATION_FIELDS = tuple(Evaluation.__dataclass_fields__)

__all__ = [
    "AGENT_KINDS",
    "EvalKey",
    "KEYS",
    "OPEN_RUN_TRACE",
    "agent_runs",
    "anomalies",
    "evaluation_results",
    "evaluation_1m_rows",
    "run_spans",
    "superseded_runs",
]

AGENT_KINDS = ("tool_loop", "llm_calls", "cost", "duration")
_ROOTS = (
    ("support-bot", "triage"),
    ("support-bot", "refund-agent"),
    ("checkout-assistant", "planner"),
    ("search-rag", ""),
)
_TOOLS = ("search_docs", "lookup_order", "issue_refund", "mcp.files/read")
OPEN_RUN_TRACE = "0c" * 16  # a run still open: findings and spans, no agent_runs row yet


def _trace(window: int, i: int) -> str:
    return f"{0xA6E00000 + window * 1000 + i:032x}"


def agent_runs(w1: datetime) -> list[dict[str, Any]]:
    """Complete runs: 48 in window 1 (four root agents in turn), 8 of checkout-assistant in window 2.

    Every 7th run (of those with LLM calls) has unpriced calls (its cost is partial, or NULL when none
    was priced); every 11th from the 6th on has no LLM call (cost NULL, nothing unpriced).
    """
    rng = np.random.default_rng(23)
    rows = []
    for window, count in ((0, 48), (1, 8)):
        base = w1 + timedelta(days=window)
        for i in range(count):
            service, root = _ROOTS[2] if window else _ROOTS[i % 4]
            start = base + timedelta(seconds=6 * i + int(rng.integers(0, 5)), microseconds=int(rng.integers(0, 10**6)))
            duration = timedelta(milliseconds=int(rng.integers(200, 120_000)))
            tools = {name: int(n) for name, n in zip(_TOOLS, rng.integers(0, 4, size=4), strict=True) if n}
            llm_calls = 0 if i % 11 == 5 else int(rng.integers(1, 12))
            unpriced = int(rng.integers(1, llm_calls + 1)) if llm_calls and i % 7 == 3 else 0
            priced = llm_calls - unpriced
            cost = Decimal(int(rng.integers(10**9, 5 * 10**11))).scaleb(-12) if priced else None
            rows.append(
                {
                    "trace_id": _trace(window, i),
                    "service": service,
                    "root_agent": root,
                    "user_id": f"user-{i % 5}",
                    "conversation_id": f"conv-{i % 9}",
                    "start_ts": start,
                    "end_ts": start + duration,
                    "duration_ms": duration / timedelta(milliseconds=1),
                    "spans": 1 + llm_calls + sum(tools.values()) + (1 if root else 0),
                    "agent_invocations": 1 if root else 0,
                    "llm_calls": llm_calls,
                    "tool_calls": sum(tools.values()),
                    "tool_calls_by_name": tools,
                    "mcp_tool_calls": tools.get("mcp.files/read", 0),
                    "input_tokens": 900 * llm_calls,
                    "output_tokens": 120 * llm_calls,
                    "cost": cost,
                    "unpriced_calls": unpriced,
                    "errors": int(i % 13 == 0),
                    "models": 1 if llm_calls else 0,
                    "agent_depth": 1 if root else 0,
                    "truncated": False,
                    "closed_at": start + duration + timedelta(minutes=3),
                }
            )
    return rows


def superseded_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of every 5th run computed from fewer spans (a replay after a restart): FINAL must drop them.

    They start a minute later, miss their first tool and an LLM call, and cost a third more, so a
    panel that reads them moves a run to another minute and changes its counts and cost.
    """
    out = []
    for run in runs[::5]:
        tools = dict(list(run["tool_calls_by_name"].items())[1:])
        out.append(
            dict(
                run,
                start_ts=run["start_ts"] + timedelta(minutes=1),
                spans=run["spans"] - 2,
                tool_calls_by_name=tools,
                tool_calls=sum(tools.values()),
                mcp_tool_calls=tools.get("mcp.files/read", 0),
                llm_calls=max(run["llm_calls"] - 1, 0),
                cost=None if run["cost"] is None else run["cost"] * Decimal("1.3333"),
                duration_ms=run["duration_ms"] / 2,
            )
        )
    return out


def _finding(
    trace: str, kind: str, subject: str, service: str, root: str, count: int, first: datetime, detected: datetime,
    spans: int, final: bool, cost: str | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "trace_id": trace,
        "kind": kind,
        "subject": subject,
        "service": service,
        "root_agent": root,
        "count": count,
        "threshold": {"tool_loop": "5", "llm_calls": "50", "cost": "5", "duration": "900"}[kind],
        "first_ts": first,
        "last_ts": first + timedelta(seconds=40),
        "input_tokens": 1000 * count,
        "output_tokens": 100 * count,
        "cost": None if cost is None else Decimal(cost),
        "spans": spans,
        "final": final,
        "version": spans * 2 + int(final),
        "detected_at": detected,
    }


def anomalies(w1: datetime, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings, early ones before the final ones that replace them.

    Window 1: two support-bot runs loop on a tool (one found early, then finally with more
    repetitions; one also loops on a second tool), a checkout-assistant run still open crosses the
    cost limit, an old llm_calls finding from 40 minutes before. Window 2: one duration finding
    detected 30 minutes before the window (too old to page in it).
    """
    a, b = runs[0], runs[4]  # support-bot / triage
    c = runs[2]  # checkout-assistant / planner
    w2 = w1 + timedelta(days=1)
    m = timedelta(minutes=1)
    sb, ca = ("support-bot", "triage"), ("checkout-assistant", "planner")
    # trace, kind, subject, service, root agent, count, first_ts, detected_at, spans, final, cost
    table = [
        (a["trace_id"], "tool_loop", "search_docs 9f2c", *sb, 5, a["start_ts"], w1 + 2 * m, 12, False, "0.004"),
        (b["trace_id"], "tool_loop", "lookup_order 1b7e", *sb, 6, b["start_ts"], w1 + 4 * m, 20, True, "0.006"),
        (b["trace_id"], "tool_loop", "search_docs 77aa", *sb, 5, b["start_ts"], w1 + 4 * m, 20, True, None),
        (OPEN_RUN_TRACE, "cost", "", *ca, 0, w1 + m / 2, w1 + 3 * m, 40, False, "5.2"),
        (c["trace_id"], "llm_calls", "", *ca, 51, w1 - 45 * m, w1 - 40 * m, 60, True, "0.9"),
        (a["trace_id"], "tool_loop", "search_docs 9f2c", *sb, 9, a["start_ts"], w1 + 6 * m, 30, True, "0.0072"),
        (_trace(1, 0), "duration", "", *ca, 0, w2 - 50 * m, w2 - 30 * m, 25, True, "0.3"),
    ]
    return [_finding(*row) for row in table]


def run_spans(w1: datetime, run: dict[str, Any]) -> list[dict[str, Any]]:
    """otel_traces rows of `run` (an HTTP span around it, the agent, two tools, an LLM call), of the open
    run, and one span of another trace at the same time, which a trace link must leave out."""

    def span(
        trace: str,
        i: int,
        parent: int | None,
        name: str,
        at: datetime,
        ms: int,
        attrs: dict[str, str],
        service: str = run["service"],
    ) -> dict[str, Any]:
        return {
            "Timestamp": at,
            "TraceId": trace,
            "SpanId": f"{int(trace[-6:], 16) * 16 + i:016x}",
            "ParentSpanId": "" if parent is None else f"{int(trace[-6:], 16) * 16 + parent:016x}",
            "SpanName": name,
            "SpanKind": "SPAN_KIND_INTERNAL",
            "ServiceName": service,
            "ResourceAttributes": {"service.name": service},
            "SpanAttributes": attrs,
            "Duration": ms * 1_000_000,
            "StatusCode": "STATUS_CODE_OK",
            "_ingest_source": "hand/agents",
            "_ingest_offset": i,
        }

    start, trace = run["start_ts"], run["trace_id"]
    s = timedelta(seconds=1)
    tool, chat = {"gen_ai.tool.name": "search_docs"}, {"gen_ai.operation.name": "chat"}
    return [
        span(trace, 0, None, "POST /chat", start - 2 * s, 9000, {"http.request.method": "POST"}),
        span(trace, 1, 0, "invoke_agent triage", start, 6000, {"gen_ai.agent.name": "triage"}),
        span(trace, 2, 1, "execute_tool search_docs", start + s, 300, tool),
        span(trace, 3, 1, "execute_tool search_docs", start + 2 * s, 300, tool),
        span(trace, 4, 1, "chat gpt-4o-mini", start + 3 * s, 2000, chat),
        span(OPEN_RUN_TRACE, 0, None, "invoke_agent planner", w1 + 30 * s, 60000, {}, "checkout-assistant"),
        span(OPEN_RUN_TRACE, 1, 0, "chat gpt-4o", w1 + 31 * s, 20000, chat, "checkout-assistant"),
        span("0d" * 16, 0, None, "invoke_agent triage", start, 1000, {"gen_ai.agent.name": "triage"}),
    ]


# ----------------------------------------------------------------------------- evaluations


@dataclass(frozen=True, slots=True)
class EvalKey:
    evaluator: str
    service: str
    model: str
    prompt_name: str
    prompt_version: str


_SONNET, _MINI = "claude-sonnet-4-20250514", "gpt-4o-mini-2024-07-18"
KEYS = {
    "support_help": EvalKey("helpfulness", "support-bot", _SONNET, "support-answer", "v3"),
    "support_faith": EvalKey("faithfulness", "support-bot", _SONNET, "support-answer", "v3"),
    "support_concise": EvalKey("conciseness", "support-bot", _SONNET, "support-answer", "v3"),
    "checkout_v7": EvalKey("helpfulness", "checkout-assistant", _MINI, "checkout-help", "v7"),
    "checkout_v8": EvalKey("helpfulness", "checkout-assistant", _MINI, "checkout-help", "v8"),
}


def _window(key: EvalKey, minute: datetime, n: int, mean: float, spread: float = 0.05) -> list[dict[str, Any]]:
    """n scored results in the minute with exactly this mean: pairs mean +- spread (and mean itself for odd n)."""
    scores = [mean + (spread if i % 2 else -spread) * (i < n - n % 2) for i in range(n)]
    return [
        {
            "ts": minute + timedelta(seconds=i * 59 / max(n, 1)),
            "evaluator": key.evaluator,
            "score_value": score,
            "score_label": "pass" if score >= 0.7 else "fail",
            "service": key.service,
            "model": key.model,
            "prompt_name": key.prompt_name,
            "prompt_version": key.prompt_version,
        }
        for i, score in enumerate(scores)
    ]


def evaluation_results(w1: datetime) -> list[dict[str, Any]]:
    """Every result, as llm_evaluations rows (see the module docstring for the timeline).

    Window 1 (from w1, 20 minutes): support helpfulness drops 0.85 -> 0.55 (6 a minute); checkout v8
    appears at 0.7 where v7 scored 0.9 and goes on doing so; support faithfulness moves 0.8 -> 0.75;
    support conciseness drops 0.9 -> 0.2 but with one result a minute. Faithfulness also gives two
    label-only results a minute (no score) for five minutes. Window 2: checkout v7 steady at 0.9, one
    minute of 30 results at 0.3 then a minute of 400 at 0.9.
    """
    k = KEYS
    out: list[dict[str, Any]] = []
    m = timedelta(minutes=1)
    for day, reference in (
        (0, ("support_help", "support_faith", "support_concise", "checkout_v7")),
        (1, ("checkout_v7",)),
    ):
        start = w1 + timedelta(days=day)
        means = {"support_help": 0.85, "support_faith": 0.8, "support_concise": 0.9, "checkout_v7": 0.9}
        for step in range(72, 0, -1):
            for name in reference:
                out += _window(k[name], start - 10 * step * m, 10, means[name])
    for i in range(21):
        minute = w1 + i * m
        out += _window(k["support_help"], minute, 6, 0.55)
        out += _window(k["checkout_v7"], minute, 6, 0.9)
        out += _window(k["checkout_v8"], minute, 6, 0.7)
        out += _window(k["support_faith"], minute, 6, 0.75)
        out += _window(k["support_concise"], minute, 1, 0.2)
        if i < 5:
            for label in ("unsupported", "supported"):
                out.append(dict(_window(k["support_faith"], minute, 1, 0.0)[0], score_value=None, score_label=label))
    w2 = w1 + timedelta(days=1)
    for i in range(21):
        out += _window(k["checkout_v7"], w2 + i * m, 6, 0.9)
    out += _window(k["checkout_v7"], w2 + 8 * m, 30, 0.3)
    out += _window(k["checkout_v7"], w2 + 9 * m, 400, 0.9)
    for i, row in enumerate(out):
        row.update(
            trace_id=f"{0xE7A10000 + i:032x}",
            span_id=f"{i:016x}",
            explanation="",
            error_type="",
            agent="",
            source="event",
            _ingest_source="hand/evaluations",
            _ingest_offset=i,
        )
    return out


def evaluation_1m_rows(evaluations: list[dict[str, Any]]) -> list[TableRows]:
    """`llm_evaluation_1m` rows from the results, made by its signal (as the worker makes them) in two partial
    batches from two sources, so the panels must sum partial rows."""
    out = []
    for half in (0, 1):
        part = [row for i, row in enumerate(evaluations) if i % 2 == half]
        results = [
            Evaluation(**{k: row[k] for k in EVALUATION_FIELDS if k != "ts_ns"}, ts_ns=_ns(row["ts"])) for row in part
        ]
        rows = signal_rows(EVALUATION_SCORES, results)
        rows.column_names += ["_ingest_source", "_ingest_offset"]
        rows.columns += [[f"hand/{half}"] * len(rows), [len(part)] * len(rows)]
        out.append(rows)
    return out


def _ns(ts: datetime) -> int:
    return int(ts.timestamp()) * 10**9 + ts.microsecond * 1000
