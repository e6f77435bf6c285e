"""`agent_runs` and `agent_anomalies` rows from closed runs and runaway findings (migration 010).

Neither table is fenced by offset (a run's spans come from many records): the delivery columns say
which agent-span partition and record (the run's first) a row came from, for tracing a row back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from processors.core.agents.runaway import Finding
from processors.core.agents.runs import AgentRun
from processors.core.tables import TableRows

__all__ = ["AGENT_ANOMALY_COLUMNS", "AGENT_RUN_COLUMNS", "anomaly_rows", "run_rows"]

AGENT_RUN_COLUMNS: Final = (
    "trace_id", "service", "root_agent", "user_id", "conversation_id", "start_ts", "end_ts", "duration_ms", "spans",
    "agent_invocations", "llm_calls", "tool_calls", "tool_calls_by_name", "mcp_tool_calls", "input_tokens",
    "output_tokens", "cost", "unpriced_calls", "errors", "models", "agent_depth", "truncated", "closed_at",
    "_ingest_source", "_ingest_offset",
)  # fmt: skip
AGENT_ANOMALY_COLUMNS: Final = (
    "trace_id", "kind", "subject", "service", "root_agent", "count", "threshold", "first_ts", "last_ts",
    "input_tokens", "output_tokens", "cost", "spans", "final", "version", "detected_at",
    "_ingest_source", "_ingest_offset",
)  # fmt: skip


def run_rows(runs: Sequence[tuple[AgentRun, str, int]], closed_at_ms: int) -> TableRows:
    """Rows of closed runs, each with the (source, offset) of its first record."""
    rows = TableRows("agent_runs", list(AGENT_RUN_COLUMNS))
    for run, source, offset in runs:
        values = (
            run.trace_id, run.service, run.root_agent, run.user_id, run.conversation_id, run.start_ns, run.end_ns,
            run.duration_ms, run.spans, run.agent_invocations, run.llm_calls, run.tool_calls, run.tool_calls_by_name,
            run.mcp_tool_calls, run.input_tokens, run.output_tokens, run.cost, run.unpriced_calls, run.errors,
            run.models, run.agent_depth, run.truncated, closed_at_ms, source, offset,
        )  # fmt: skip
        for column, value in zip(rows.columns, values, strict=True):
            column.append(value)
    return rows


def anomaly_rows(found: Sequence[tuple[Finding, str, int]], detected_at_ms: int) -> TableRows:
    """Rows of runaway findings; `version` makes a run's final finding replace the early ones."""
    rows = TableRows("agent_anomalies", list(AGENT_ANOMALY_COLUMNS))
    for f, source, offset in found:
        values = (
            f.trace_id, f.kind, f.subject, f.service, f.root_agent, f.count, f.threshold, f.first_ns, f.last_ns,
            f.input_tokens, f.output_tokens, f.cost, f.spans, f.final, f.spans * 2 + f.final, detected_at_ms,
            source, offset,
        )  # fmt: skip
        for column, value in zip(rows.columns, values, strict=True):
            column.append(value)
    return rows
