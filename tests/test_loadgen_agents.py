"""`llmops loadgen --scenario agents` against local OTLP sinks, its ground truth recomputed with the pipeline's core.

The sinks keep every request the SDK exporters sent. Each body is decoded as the worker decodes it
(`decode_request`), model calls are normalised and priced by the pipeline's normaliser and pricer,
every span becomes a `RunSpan`, and each trace's run and runaway findings come from the agent-run
core (`run_of`, `findings`). The loadgen's truth is counted from its own plan and price table, so
the two agree only if both the traffic and the core are right.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from llmops.loadgen import LoadgenOptions, LoadgenSummary, render_summary, run_loadgen
from llmops.loadgen_agents import EVALUATION_EVENT, EXPORT_JITTER_NS
from llmops.loadgen_truth import PRICES, AgentTruth
from processors.core.agents.runaway import RunawayRules, findings
from processors.core.agents.runs import run_of
from processors.core.agents.spans import RunSpan, args_digest, run_span
from processors.core.decode import decode_request
from processors.core.normalize import normalize_call
from processors.core.pricer import Pricer, PricerSources
from processors.core.records import LLMCall, SpanView
from tests.otlp_sink import collecting_otlp_grpc_sink, collecting_otlp_sink, otlp_http_sink

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
M = Decimal(1_000_000)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer.load(PricerSources())


def send(protocol: str, **kw: Any) -> tuple[LoadgenSummary, list[bytes]]:
    sink = collecting_otlp_grpc_sink if protocol == "grpc" else collecting_otlp_sink
    with sink() as (endpoint, bodies):
        options: dict[str, Any] = {
            "endpoint": endpoint,
            "protocol": protocol,
            "scenario": "agents",
            "start_ns": START_NS,
            "max_export_batch_size": 16,
        }
        summary = run_loadgen(LoadgenOptions(**(options | kw)))
    return summary, list(bodies)


@dataclass
class Seen:
    """What the pipeline's core makes of the received requests."""

    runs: dict[str, dict[str, RunSpan]]  # trace -> span id -> RunSpan
    views: dict[str, SpanView]  # span id -> decoded span
    calls: dict[str, LLMCall]  # span id -> normalised, priced call
    arrival: dict[str, tuple[int, int]]  # span id -> (request, position)


def through_core(bodies: list[bytes], pricer: Pricer) -> Seen:
    seen = Seen(defaultdict(dict), {}, {}, {})
    for number, body in enumerate(bodies):
        decoded = decode_request(body)  # without `keep`: every valid span
        assert not decoded.problems
        for position, view in enumerate(decoded.spans):
            call = normalize_call(view)
            if call is not None:
                assert not call.problems, call.problems
                pricer.enrich(view, call)
                seen.calls[view.span_id] = call
            span = run_span(view, call)
            assert span is not None, f"span {view.name} has no role in a run"
            assert view.span_id not in seen.views
            seen.runs[span.trace_id][span.span_id] = span
            seen.views[view.span_id] = view
            seen.arrival[view.span_id] = (number, position)
    return seen


def assert_truth_matches(truth: AgentTruth, seen: Seen) -> None:
    rules = RunawayRules(
        loop_repeats=truth.loop_repeats, max_llm_calls=truth.max_llm_calls, max_cost_usd=truth.max_cost_usd
    )
    assert sorted(seen.runs) == sorted(r.trace_id for r in truth.runs)
    loops = defaultdict(list)
    for loop in truth.loops:
        loops[loop.trace_id].append(loop)
    for want in truth.runs:
        spans = seen.runs[want.trace_id]
        got = run_of(want.trace_id, spans)
        assert (
            got.service,
            got.root_agent,
            got.start_ns,
            got.end_ns,
            got.spans,
            got.agent_invocations,
            got.agent_depth,
            got.llm_calls,
            got.tool_calls,
            got.tool_calls_by_name,
            got.mcp_tool_calls,
            got.input_tokens,
            got.output_tokens,
            got.cost,
            got.unpriced_calls,
            got.errors,
            got.models,
            got.truncated,
        ) == (
            want.service,
            want.root_agent,
            want.start_ns,
            want.end_ns,
            want.spans,
            want.agent_invocations,
            want.agent_depth,
            want.llm_calls,
            want.tool_calls,
            want.tool_calls_by_name,
            want.mcp_tool_calls,
            want.input_tokens,
            want.output_tokens,
            want.cost,
            0,
            want.errors,
            want.models,
            False,
        ), want
        # users and conversations, as the normaliser reads them from each convention
        calls = [seen.calls[s] for s, span in spans.items() if span.role == "llm"]
        assert {c.conversation_id for c in calls} == {want.conversation_id} == {got.conversation_id}
        assert {c.user_id for c in calls} == {want.user_id} == {got.user_id}

        found = findings(want.trace_id, spans, rules, final=True)
        assert tuple(f.kind for f in found if f.kind != "tool_loop") == tuple(
            k for k in want.findings if k != "tool_loop"
        )
        got_loops = sorted(
            (f.subject, f.count, f.first_ns, f.last_ns, f.input_tokens, f.output_tokens, f.cost)
            for f in found
            if f.kind == "tool_loop"
        )
        want_loops = sorted(
            (
                f"{x.tool} {args_digest(x.arguments)}",
                x.repeats,
                x.first_ns,
                x.last_ns,
                x.input_tokens,
                x.output_tokens,
                x.cost,
            )
            for x in loops[want.trace_id]
        )
        assert got_loops == want_loops, want.trace_id
        assert ("tool_loop" in want.findings) == bool(want_loops)


def assert_evaluations_match(truth: AgentTruth, seen: Seen) -> None:
    events = [(view, event) for view in seen.views.values() for event in view.events if event.name == EVALUATION_EVENT]
    assert dict(Counter(e.attributes["gen_ai.evaluation.name"] for _, e in events)) == truth.evaluations_by_evaluator
    got = sorted(
        (
            view.trace_id,
            view.span_id,
            seen.runs[view.trace_id][view.span_id].role,
            e.attributes["gen_ai.evaluation.name"],
            e.attributes.get("gen_ai.evaluation.score.value"),
            e.attributes["gen_ai.evaluation.score.label"],
            e.attributes.get("gen_ai.evaluation.explanation", ""),
        )
        for view, e in events
    )
    want = sorted(
        (e.trace_id, e.span_id, e.target, e.evaluator, e.score, e.label, e.explanation) for e in truth.evaluations
    )
    assert got == want
    assert {e.target for e in truth.evaluations} == {"llm", "agent"}
    assert any(e.score is None for e in truth.evaluations)  # a label-only evaluator


@pytest.mark.parametrize(("protocol", "loop_repeats"), [("http/protobuf", 5), ("grpc", 3)])
def test_ground_truth_is_what_the_pipeline_core_finds(protocol: str, loop_repeats: int, pricer: Pricer) -> None:
    summary, bodies = send(protocol, count=60, seed=4, loop_repeats=loop_repeats)
    truth = summary.agents
    assert truth is not None and summary.complete and summary.spans_failed == 0
    assert summary.calls_sent == len(truth.runs) == 60
    seen = through_core(bodies, pricer)
    assert len(seen.views) == summary.spans_sent == summary.spans_acknowledged
    assert_truth_matches(truth, seen)
    assert_evaluations_match(truth, seen)

    # the traffic has every kind of run, convention and depth, MCP calls both ways, errors and loops
    assert {r.kind for r in truth.runs} == {"plain", "loop", "varied", "runaway", "costly"}
    assert {r.convention for r in truth.runs} == {"otel_genai", "openinference", "openllmetry"}
    assert {r.agent_depth for r in truth.runs} == {1, 2, 3}
    assert sum(r.errors for r in truth.runs) > 0
    mcp = [v.attributes for v in seen.views.values() if seen.runs[v.trace_id][v.span_id].mcp]
    assert any(a.get("mcp.method.name") == "tools/call" for a in mcp)
    assert any(a.get("gen_ai.tool.type") == "mcp" and "mcp.method.name" not in a for a in mcp)
    assert {r.kind for r in truth.runs if "tool_loop" in r.findings} == {"loop"}  # no false loop
    assert all(loop.repeats >= loop_repeats for loop in truth.loops)
    assert all("llm_calls" in r.findings for r in truth.runs if r.kind == "runaway")
    assert all("cost" in r.findings for r in truth.runs if r.kind == "costly")
    assert all(r.findings == () for r in truth.runs if r.kind in ("plain", "varied"))
    # a varied run repeats one tool at least loop_repeats times, with arguments that differ
    varied = [r for r in truth.runs if r.kind == "varied"]
    assert varied and all(max(r.tool_calls_by_name.values()) >= loop_repeats for r in varied)

    # one trace's spans arrive in several requests, out of order: children before parents and after ...
    requests_per_trace = Counter(
        len({seen.arrival[s][0] for s in spans}) for spans in seen.runs.values() if len(spans) > 16
    )
    assert requests_per_trace and min(requests_per_trace) >= 2
    order = [
        seen.arrival[s] < seen.arrival[span.parent_span_id]
        for spans in seen.runs.values()
        for s, span in spans.items()
        if span.parent_span_id
    ]
    assert any(order) and not all(order)
    # ... yet in event time nearly in order: each service's exporter sends a span at most the export
    # jitter after the newest end it already sent, so a pipeline's lateness can cover the disorder
    newest: dict[str, int] = defaultdict(int)
    late = 0
    for view in sorted(seen.views.values(), key=lambda v: seen.arrival[v.span_id]):
        service = str(view.resource["service.name"])
        late = max(late, newest[service] - view.end_ns)
        newest[service] = max(newest[service], view.end_ns)
    assert 0 < late <= EXPORT_JITTER_NS

    # the summary's model table counts the calls of every convention
    assert summary.llm_spans_acknowledged == sum(r.llm_calls for r in truth.runs)
    assert sum(t.input_tokens for t in summary.by_model.values()) == sum(r.input_tokens for r in truth.runs)
    text = render_summary(summary)
    assert "agent runs" in text and f"loop: {truth.loops[0].trace_id}" in text
    out = json.loads(json.dumps(summary.to_dict()))
    assert Decimal(out["agents"]["runs"][0]["cost"]) == truth.runs[0].cost


def canonical(bodies: list[bytes]) -> list[bytes]:
    """Every span with its resource, order-free."""
    out = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = rs.resource.SerializeToString(deterministic=True)
            for ss in rs.scope_spans:
                out += [resource + span.SerializeToString(deterministic=True) for span in ss.spans]
    return sorted(out)


def test_a_seed_fixes_the_traffic_and_its_truth() -> None:
    runs = [send("http/protobuf", count=12, seed=seed) for seed in (8, 8, 9)]
    spans = [canonical(bodies) for _, bodies in runs]
    assert spans[0] == spans[1] != spans[2]
    truths = [summary.agents for summary, _ in runs]
    assert truths[0] == truths[1] != truths[2]
    # run i depends on (seed, i) only: the first 12 runs of a longer run are the same runs
    longer, _ = send("http/protobuf", count=15, seed=8)
    assert longer.agents is not None and truths[0] is not None
    assert longer.agents.runs[:12] == truths[0].runs


def test_hard_wired_prices_equal_the_pipeline_catalog(pricer: Pricer) -> None:
    for model, price in PRICES.items():
        provider = "anthropic" if model.startswith("claude") else "openai"
        for ts in (START_NS, START_NS + 365 * 86_400 * 10**9):
            for tokens, per_million in (
                ((1_000_000, 0, 0, 0), price.input),
                ((0, 1_000_000, 0, 0), price.output),
                ((1_000_000, 0, 1_000_000, 0), price.cache_read),
                ((1_000_000, 0, 0, 1_000_000), price.cache_write),
            ):
                tin, tout, read, write = tokens
                call = LLMCall(
                    ts_ns=ts,
                    trace_id="a",
                    span_id="b",
                    provider=provider,
                    request_model=model,
                    response_model=model,
                    operation="chat",
                    input_tokens=tin,
                    output_tokens=tout,
                    cache_read_tokens=read,
                    cache_write_tokens=write,
                )
                pricer.price(call)
                assert call.cost == per_million == price.cost(*tokens), (model, tokens)
    # a call that failed before answering has no tokens and costs nothing, priced (not unpriced)
    failed = LLMCall(ts_ns=START_NS, trace_id="a", span_id="b", provider="openai", request_model="gpt-4o")
    pricer.price(failed)
    assert failed.cost == 0 == PRICES["gpt-4o"].cost(0, 0, 0, 0)
    assert (
        PRICES["gpt-4o-mini"].cost(1200, 300, 1000, 0)
        == (200 * Decimal("0.15") + 1000 * Decimal("0.075") + 300 * Decimal("0.60")) / M
    )


def test_rejected_exports_leave_the_truth_empty() -> None:
    with otlp_http_sink(lambda body: None, status=400) as endpoint:
        summary = run_loadgen(
            LoadgenOptions(
                endpoint=endpoint, scenario="agents", count=10, seed=1, start_ns=START_NS, max_export_batch_size=8
            )
        )
    assert summary.agents is not None and summary.agents.runs == [] and summary.agents.evaluations == []
    assert summary.spans_acknowledged == 0 and summary.spans_failed == summary.spans_sent > 0
    assert summary.by_model == {} and summary.llm_spans_acknowledged == 0


def test_agent_options() -> None:
    assert LoadgenOptions(scenario="agents").total_calls == 100
    assert LoadgenOptions().total_calls == 1000
    assert LoadgenOptions().loop_repeats == RunawayRules().loop_repeats
    assert LoadgenOptions().max_llm_calls == RunawayRules().max_llm_calls
    with pytest.raises(ValidationError):
        LoadgenOptions(loop_repeats=1)
    with pytest.raises(ValidationError):
        LoadgenOptions(scenario="swarm")  # not a scenario
