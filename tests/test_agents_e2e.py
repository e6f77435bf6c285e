"""Agent runs end to end (issue 19): loadgen's agents scenario through the receiver, broker, worker and chDB.

Every run, every loop and every evaluation the loadgen acknowledged must be in `agent_runs`,
`agent_anomalies` and `llm_evaluations` with exact counts and cost, and nothing else.

Timing: the scenario's spans reach the stage in no event-time order (three services' exporters, the
receiver and two partitions interleave runs minutes of event time apart), so a run may only close
once all its spans are in. The traffic lies 2 hours in the past and `agents.lateness_s` is 1 hour:
longer than the traffic's whole event-time span (a few minutes), so no run closes while spans
arrive, and shorter than its age, so `agents.idle_close_s` after the last record the watermark
(the wall clock minus the lateness) passes every run and closes them all. The gap is short, as the
issue's test asks; with lateness 1 s, runs close before their last spans arrive.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from llmops.loadgen import LoadgenOptions, run_loadgen
from processors.core.agents.spans import args_digest
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

START_NS = (time.time_ns() // 10**9 - 7200) * 10**9  # two hours ago, on a second
RUNS = 40


def test_agent_runs_loops_and_evaluations_match_the_loadgen_truth(make_stack) -> None:
    stack = make_stack(
        partitions=2,
        LLMOPS_AGENTS__GAP_S="2",
        LLMOPS_AGENTS__LATENESS_S="3600",
        LLMOPS_AGENTS__IDLE_CLOSE_S="4",
    )
    stack.start_worker()
    stack.start_receiver()
    summary = run_loadgen(
        LoadgenOptions(
            endpoint=stack.http_url,
            scenario="agents",
            count=RUNS,
            seed=19,
            start_ns=START_NS,
            time_step_ns=2 * 10**9,
            max_export_batch_size=32,
        )
    )
    truth = summary.agents
    assert truth is not None and summary.complete and len(truth.runs) == RUNS
    assert truth.loops and any(r.findings for r in truth.runs if r.kind != "loop")

    wait_until(lambda: stack.count("SELECT count() FROM otel_traces") == summary.spans_acknowledged, 60, "spans")
    wait_until(lambda: stack.count("SELECT count() FROM llm_calls") == summary.llm_spans_acknowledged, 30, "LLM calls")
    # the model calls of every convention, normalised and priced by the worker: each run's calls and cost
    client = stack.reader()
    per_trace = client.query(
        "SELECT trace_id, count(), sum(cost), countIf(cost IS NULL) FROM llm_calls GROUP BY trace_id"
    )
    client.close()
    assert sorted(per_trace.result_rows) == sorted((r.trace_id, r.llm_calls, r.cost, 0) for r in truth.runs)

    wait_until(lambda: stack.count("SELECT count() FROM agent_runs FINAL") == RUNS, 60, "agent runs closed")
    # one final finding per loop, and one per other threshold a run crossed
    expected_findings = len(truth.loops) + sum(k != "tool_loop" for r in truth.runs for k in r.findings)
    wait_until(
        lambda: stack.count("SELECT count() FROM agent_anomalies FINAL WHERE final") == expected_findings,
        30,
        "final runaway findings",
    )

    client = stack.reader()
    try:
        rows = client.query(
            "SELECT trace_id, service, root_agent, user_id, conversation_id, toUnixTimestamp64Nano(start_ts),"
            " toUnixTimestamp64Nano(end_ts), spans, agent_invocations, llm_calls, tool_calls, tool_calls_by_name,"
            " mcp_tool_calls, input_tokens, output_tokens, cost, unpriced_calls, errors, models, agent_depth,"
            " truncated FROM agent_runs FINAL"
        ).result_rows
        got_runs = {row[0]: row[1:] for row in rows}
        assert len(got_runs) == len(rows) == RUNS
        for r in truth.runs:
            assert got_runs[r.trace_id] == (
                r.service,
                r.root_agent,
                r.user_id,
                r.conversation_id,
                r.start_ns,
                r.end_ns,
                r.spans,
                r.agent_invocations,
                r.llm_calls,
                r.tool_calls,
                r.tool_calls_by_name,
                r.mcp_tool_calls,
                r.input_tokens,
                r.output_tokens,
                r.cost,
                0,
                r.errors,
                r.models,
                r.agent_depth,
                False,
            ), r

        anomalies = client.query(
            "SELECT trace_id, kind, subject, count, input_tokens, output_tokens, cost"
            " FROM agent_anomalies FINAL WHERE final"
        ).result_rows
        loops = sorted(a for a in anomalies if a[1] == "tool_loop")
        assert loops == sorted(
            (
                x.trace_id,
                "tool_loop",
                f"{x.tool} {args_digest(x.arguments)}",
                x.repeats,
                x.input_tokens,
                x.output_tokens,
                x.cost,
            )
            for x in truth.loops
        )
        others = sorted((a[0], a[1]) for a in anomalies if a[1] != "tool_loop")
        assert others == sorted((r.trace_id, k) for r in truth.runs for k in r.findings if k != "tool_loop")
        # no false loop: only the looping runs have a tool_loop finding, early or final
        looping = {r.trace_id for r in truth.runs if r.kind == "loop"}
        flagged = client.query("SELECT DISTINCT trace_id FROM agent_anomalies WHERE kind = 'tool_loop'").result_rows
        assert {t for (t,) in flagged} <= looping

        total = client.query("SELECT sum(cost) FROM agent_runs FINAL").result_rows[0][0]
        assert Decimal(total) == sum((r.cost for r in truth.runs), Decimal(0))
    finally:
        client.close()

    # evaluation results, once each (llm_evaluations is fenced like llm_calls), on model calls and agent spans
    wait_until(lambda: stack.count("SELECT count() FROM llm_evaluations") >= len(truth.evaluations), 30, "evaluations")
    client = stack.reader()
    try:
        evaluations = client.query(
            "SELECT trace_id, span_id, evaluator, score_value, score_label, explanation, service, source"
            " FROM llm_evaluations"
        ).result_rows
        service_of = {r.trace_id: r.service for r in truth.runs}
        assert sorted(evaluations) == sorted(
            (e.trace_id, e.span_id, e.evaluator, e.score, e.label, e.explanation, service_of[e.trace_id], "event")
            for e in truth.evaluations
        )
    finally:
        client.close()
