"""Agent runs (issue 19): span roles, one run's row, and the assembler under any interleaving, split and restart."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.agents.runaway import Finding, RunawayRules, findings
from processors.core.agents.runs import AgentRun, RunAssembler, RunSettings, run_of
from processors.core.agents.spans import RunSpan, args_digest, run_span, span_role
from processors.core.agents.wire import MalformedRunRecord, decode_run_spans, encode_run_spans, partition_of
from processors.core.records import LLMCall, SpanView

S = 10**9
T0 = 1_764_000_000 * S


def _view(attributes: dict, **fields) -> SpanView:
    base = {
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_span_id": "",
        "name": "x",
        "kind": 1,
        "start_ns": T0,
        "end_ns": T0 + S,
        "status_code": 0,
        "status_message": "",
        "attributes": attributes,
        "resource": {"service.name": "svc"},
    }
    return SpanView(**{**base, **fields})


@pytest.mark.parametrize(
    ("attributes", "role"),
    [
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}, "agent"),
        ({"gen_ai.operation.name": "create_agent"}, "agent"),
        ({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, "tool"),
        ({"mcp.method.name": "tools/call", "gen_ai.tool.name": "fs.read"}, "tool"),
        ({"openinference.span.kind": "AGENT"}, "agent"),
        ({"openinference.span.kind": "tool"}, "tool"),
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"openinference.span.kind": "EVALUATOR"}, "evaluator"),
        ({"traceloop.span.kind": "agent"}, "agent"),
        ({"traceloop.span.kind": "workflow"}, "chain"),
        ({"traceloop.span.kind": "tool"}, "tool"),
        ({"gen_ai.operation.name": "chat"}, None),  # a model call: a role only with its LLMCall
        ({"http.method": "GET"}, None),
        ({"mcp.method.name": "tools/list"}, None),
    ],
)
def test_span_role_per_convention(attributes: dict, role: str | None) -> None:
    assert span_role(attributes) == role


def test_tool_arguments_are_compared_as_json_values() -> None:
    assert args_digest('{"q": "paris", "k": 3}') == args_digest('{ "k":3,"q":"paris" }')
    assert args_digest('{"q": "paris"}') != args_digest('{"q": "rome"}')
    assert args_digest("not json {") == args_digest("not json {") != args_digest("not json }")
    assert args_digest(None) == ""
    span = run_span(
        _view(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "search",
                "gen_ai.tool.type": "mcp",
                "gen_ai.tool.call.arguments": '{"q": 1}',
            }
        )
    )
    assert span is not None and span.role == "tool" and span.name == "search" and span.mcp
    assert span.tool_args == args_digest('{"q":1}')
    assert run_span(_view({"http.method": "GET"})) is None
    assert run_span(_view({"gen_ai.operation.name": "invoke_agent"}, trace_id="")) is None


def test_openai_agents_sdk_workflow_and_handoff_spans() -> None:
    """OpenInference's OpenAI Agents instrumentation: the SDK's trace is an AGENT span without an agent
    name (a workflow: a chain here), a handoff a TOOL span without a tool name (named by its span)."""
    scope = "openinference.instrumentation.openai_agents"
    workflow = run_span(_view({"openinference.span.kind": "AGENT"}, name="Agent workflow", scope_name=scope))
    assert workflow is not None and (workflow.role, workflow.name) == ("chain", "")
    agent = run_span(_view({"openinference.span.kind": "AGENT", "agent.name": "triage"}, scope_name=scope))
    assert agent is not None and (agent.role, agent.name) == ("agent", "triage")
    # Another instrumentation's nameless AGENT span stays an agent.
    other = run_span(_view({"openinference.span.kind": "AGENT"}, scope_name="openinference.instrumentation.langchain"))
    assert other is not None and other.role == "agent"
    # A tool span's arguments are its `input.value`; `tool.parameters` is the tool's schema, the same for every call.
    schema = '{"properties": {"city": {"type": "string"}}, "required": ["city"]}'
    tool = {"openinference.span.kind": "TOOL", "tool.name": "weather", "tool.parameters": schema}
    paris, rome = (run_span(_view({**tool, "input.value": json.dumps({"city": c})})) for c in ("paris", "rome"))
    assert paris is not None and rome is not None and paris.tool_args != rome.tool_args
    assert paris.tool_args == args_digest('{"city": "paris"}')
    hand = run_span(_view({"openinference.span.kind": "TOOL", "input.value": "triage"}, name="handoff to refunds"))
    assert hand is not None and (hand.role, hand.name) == ("tool", "handoff to refunds")


def test_llm_span_takes_tokens_and_cost_from_its_call() -> None:
    call = LLMCall(ts_ns=T0, trace_id="ab" * 16, span_id="cd" * 8, request_model="gpt-4o", input_tokens=10,
                   output_tokens=4, cost=Decimal("0.000065"), user_id="u-7", conversation_id="c-1")  # fmt: skip
    span = run_span(_view({"gen_ai.operation.name": "chat"}, status_code=2), call)
    assert span == RunSpan("ab" * 16, "cd" * 8, "", "llm", "svc", "gpt-4o", T0, T0 + S, True, "", False, "u-7", "c-1",
                           10, 4, Decimal("0.000065"))  # fmt: skip


def _span(sid: str, parent: str, role: str, name: str, start_s: float, end_s: float, **kw) -> RunSpan:
    return RunSpan("t1", sid, parent, role, kw.pop("service", "shop"), name, T0 + int(start_s * S),
                   T0 + int(end_s * S), kw.pop("error", False), **kw)  # fmt: skip


def test_one_run_row_by_hand() -> None:
    spans = [
        _span("a", "", "agent", "triage", 0, 20),
        _span(
            "l1",
            "a",
            "llm",
            "gpt-4o",
            0.1,
            1,
            input_tokens=100,
            output_tokens=10,
            cost=Decimal("0.00035"),
            conversation_id="conv-1",
        ),
        _span("c", "a", "chain", "route", 1, 15),
        _span("b", "c", "agent", "refunds", 1.5, 14),  # nested through a chain span: depth 2
        _span("t1", "b", "tool", "lookup", 2, 3, tool_args=args_digest('{"id": 7}')),
        _span("t2", "b", "tool", "lookup", 3, 4, tool_args=args_digest('{"id": 8}'), error=True),
        _span("m", "b", "tool", "fs.read", 4, 5, mcp=True),
        _span("l2", "b", "llm", "llama-ft", 5, 6, input_tokens=50, output_tokens=5),  # unpriced
        _span(
            "l3",
            "b",
            "llm",
            "gpt-4o",
            6,
            7,
            input_tokens=20,
            output_tokens=2,
            cost=Decimal("0.00007"),
            user_id="u-42",
            conversation_id="conv-2",
        ),
    ]
    run = run_of("t1", {s.span_id: s for s in reversed(spans)})
    assert run == AgentRun(
        trace_id="t1", service="shop", root_agent="triage", user_id="u-42", conversation_id="conv-1", start_ns=T0,
        end_ns=T0 + 20 * S, spans=9,
        agent_invocations=2, llm_calls=3, tool_calls=3, tool_calls_by_name={"lookup": 2, "fs.read": 1},
        mcp_tool_calls=1, input_tokens=170, output_tokens=17, cost=Decimal("0.00042"), unpriced_calls=1, errors=1,
        models=2, agent_depth=2, truncated=False,
    )  # fmt: skip
    assert run.duration_ms == 20_000
    # No priced call: the cost is unknown (NULL), never zero.
    unpriced = run_of("t1", {"l": _span("l", "", "llm", "llama-ft", 0, 1, input_tokens=5)})
    assert unpriced.cost is None and unpriced.unpriced_calls == 1 and unpriced.agent_depth == 0
    # A parent id that points back into the run (bad data) ends the walk instead of looping.
    cyclic = {"x": _span("x", "y", "agent", "x", 0, 1), "y": _span("y", "x", "agent", "y", 0, 1)}
    assert run_of("t1", cyclic).agent_depth == 2


def test_runaway_findings_by_hand() -> None:
    rules = RunawayRules(loop_repeats=3, max_llm_calls=2, max_cost_usd=Decimal("0.01"), max_duration_s=60)
    same = args_digest('{"q": "status"}')
    spans = {
        s.span_id: s
        for s in [
            _span("a", "", "agent", "poller", 0, 90),
            _span("t1", "a", "tool", "check", 1, 2, tool_args=same),
            _span("l1", "a", "llm", "gpt-4o", 2, 3, input_tokens=1000, output_tokens=10, cost=Decimal("0.006")),
            _span("t2", "a", "tool", "check", 3, 4, tool_args=same),
            _span("l2", "a", "llm", "gpt-4o", 4, 5, input_tokens=1000, output_tokens=10, cost=Decimal("0.006")),
            _span("t3", "a", "tool", "check", 5, 6, tool_args=same),
            _span("l3", "a", "llm", "gpt-4o", 80, 81, input_tokens=7, output_tokens=1, cost=Decimal("0.001")),
            _span("u1", "a", "tool", "check", 7, 8),  # no arguments recorded: never part of a loop
            _span("d1", "a", "tool", "check", 8, 9, tool_args=args_digest('{"q": "other"}')),
        ]
    }
    found = {f.kind: f for f in findings("t1", spans, rules, final=True)}
    assert set(found) == {"tool_loop", "llm_calls", "cost", "duration"}
    loop = found["tool_loop"]
    assert (loop.subject, loop.count, loop.first_ns, loop.last_ns) == (f"check {same}", 3, T0 + S, T0 + 6 * S)
    # Spent in the repetition: the LLM calls that started between the first and the last repeated call.
    assert (loop.input_tokens, loop.output_tokens, loop.cost) == (2000, 20, Decimal("0.012"))
    assert found["llm_calls"].count == 3 and found["cost"].cost == Decimal("0.013")
    assert all(f.spans == 9 and f.final and f.root_agent == "poller" for f in found.values())
    calm = {k: v for k, v in spans.items() if k in {"a", "t1", "t2", "u1", "d1"}}
    assert [f.kind for f in findings("t1", calm, replace(rules, max_duration_s=100), final=True)] == []


def test_findings_are_reported_as_soon_as_crossed() -> None:
    """The loop is reported on the span that makes the third repetition, long before the run closes."""
    rules = RunawayRules(loop_repeats=3)
    assembler = RunAssembler(RunSettings(gap_s=60, lateness_s=10, rules=rules))
    same = args_digest('{"q": 1}')
    reported: list[Finding] = []
    for i in range(6):
        out = assembler.add("p0", i, [_span(f"t{i}", "", "tool", "check", i, i + 0.5, tool_args=same)], T0 + i * S)
        reported += out.findings
        assert out.runs == []
        if i < 2:
            assert reported == []
    assert [(f.kind, f.count, f.spans, f.final) for f in reported] == [("tool_loop", 3, 3, False)]
    closed = assembler.close(T0 + 10**6 * S)
    assert [r.tool_calls for r in closed.runs] == [6]
    assert [(f.kind, f.count, f.spans, f.final) for f in closed.findings] == [("tool_loop", 6, 6, True)]


def test_bounds_evict_and_count() -> None:
    assembler = RunAssembler(RunSettings(max_open_runs=2, max_spans_per_run=3))
    for i in range(5):
        span = _span(f"s{i}", "", "llm", "m", i, i + 1)
        assembler.add("p0", i, [replace(span, trace_id="big")], T0)
    assert assembler.spans_over_limit == 2
    out = assembler.add("p0", 5, [replace(_span("x", "", "llm", "m", 0, 1), trace_id="other")], T0)
    assert out.runs == []
    out = assembler.add("p0", 6, [replace(_span("y", "", "llm", "m", 0, 1), trace_id="third")], T0)
    assert [(r.trace_id, r.spans, r.truncated) for r in out.runs] == [("big", 3, True)]
    assert assembler.evicted_runs == 1 and assembler.open_runs == 2
    # A span of the evicted run is late now: counted, not a second row for the same trace.
    assembler.add("p0", 7, [replace(_span("s9", "", "llm", "m", 9, 10), trace_id="big")], T0)
    assert assembler.late_spans == 1


# ---------------------------------------------------------------- any interleaving, split and restart

SKEW_S = 10  # how far, in event time, a record may arrive out of order within its partition
SETTINGS = RunSettings(gap_s=20, lateness_s=35, idle_close_s=10**6, max_open_runs=10**6,
                       rules=RunawayRules(loop_repeats=3, max_llm_calls=6, max_cost_usd=Decimal("0.05"),
                                          max_duration_s=25))  # fmt: skip
# A run is only complete when late records cannot still bring spans: gap + lateness >= trace length + skew.
TRACE_S = 30


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[RunSpan, ...]


@st.composite
def traces(draw: st.DrawFn, trace_id: str) -> Trace:
    start = draw(st.integers(0, 200))
    spans: list[RunSpan] = []
    parents = [""]
    for i in range(draw(st.integers(1, 14))):
        role = draw(st.sampled_from(["agent", "tool", "llm", "llm", "chain", "tool"]))
        s0 = draw(st.integers(0, TRACE_S - 2))
        span = RunSpan(
            trace_id=trace_id,
            span_id=f"{trace_id}-{i}",
            parent_span_id=draw(st.sampled_from(parents)),
            role=role,
            service=draw(st.sampled_from(["shop", "bot"])),
            name=draw(st.sampled_from(["a", "b"] if role != "llm" else ["gpt-4o", "llama"])),
            start_ns=T0 + (start + s0) * S,
            end_ns=T0 + (start + s0 + draw(st.integers(0, 2))) * S,
            error=draw(st.booleans()),
            tool_args=draw(st.sampled_from(["", "k1", "k2"])) if role == "tool" else "",
            mcp=role == "tool" and draw(st.booleans()),
            input_tokens=draw(st.integers(0, 5000)) if role == "llm" else 0,
            output_tokens=draw(st.integers(0, 500)) if role == "llm" else 0,
            cost=draw(st.sampled_from([None, Decimal("0.013"), Decimal("0.0000001")])) if role == "llm" else None,
        )
        spans.append(span)
        parents.append(span.span_id)
    return Trace(trace_id, tuple(spans))


def _records(trace: Trace, rng: random.Random) -> list[list[RunSpan]]:
    """The trace's spans shuffled and split into records, some spans sent twice (an exporter's retry)."""
    spans = list(trace.spans) + [s for s in trace.spans if rng.random() < 0.1]
    rng.shuffle(spans)
    cuts = sorted(rng.sample(range(1, len(spans)), rng.randint(0, len(spans) - 1))) if len(spans) > 1 else []
    return [spans[a:b] for a, b in zip([0, *cuts], [*cuts, len(spans)], strict=True)]


def _versioned(table: dict, key, version: int, row) -> None:
    """ReplacingMergeTree(version) as FINAL reads it: the highest version per key; a tie must be the same row."""
    kept = table.get(key)
    if kept is None or version > kept[0]:
        table[key] = (version, row)
    elif version == kept[0]:
        assert row == kept[1], f"two different rows of one version for {key}"


def _store(out, runs: dict, found: dict) -> None:
    for run in out.runs:
        _versioned(runs, run.trace_id, run.spans, run)
    for f in out.findings:
        _versioned(found, (f.trace_id, f.kind, f.subject), f.spans * 2 + f.final, f)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=12, unique=True).flatmap(
        lambda ids: st.tuples(*(traces(f"t{i}") for i in ids))
    ),
    st.integers(1, 3),
    st.randoms(use_true_random=False),
    st.floats(0, 0.15),
)
def test_any_interleaving_split_and_restart_gives_each_run_once(
    generated: tuple[Trace, ...], partitions: int, rng: random.Random, crash_rate: float
) -> None:
    """Routed by trace id, split into records, interleaved across partitions, reordered within the lateness,
    with the worker killed at random points and restarted from its committed offsets: `agent_runs` and
    `agent_anomalies`, read as ReplacingMergeTree FINAL reads them, hold each run's full row exactly once."""
    logs: dict[str, list[tuple[int, list[RunSpan]]]] = {f"p{p}": [] for p in range(partitions)}
    for trace in generated:
        partition = f"p{hash(trace.trace_id) % partitions}"
        for record in _records(trace, rng):
            # Producers send roughly in event-time order; a record may be late by up to SKEW_S.
            logs[partition].append((max(s.end_ns for s in record) + rng.randint(0, SKEW_S) * S, record))
    topic = {p: [record for _, record in sorted(log, key=lambda e: e[0])] for p, log in logs.items()}

    runs: dict = {}
    found: dict = {}
    committed = dict.fromkeys(topic, 0)
    position = dict(committed)
    assembler = RunAssembler(SETTINGS)
    newest = T0
    while any(position[p] < len(topic[p]) for p in topic):
        if rng.random() < crash_rate:  # killed: memory gone, consumption resumes at the committed offsets
            assembler = RunAssembler(SETTINGS)
            position = dict(committed)
            continue
        partition = rng.choice([p for p in topic if position[p] < len(topic[p])])
        record = topic[partition][position[partition]]
        newest = max(newest, *(s.end_ns for s in record))
        out = assembler.add(partition, position[partition], record, newest)
        position[partition] += 1
        _store(out, runs, found)
        _store(assembler.close(newest), runs, found)
        for p in topic:  # commit only what the written rows cover
            committed[p] = assembler.committable(p, position[p])
    _store(assembler.close(newest + 10**7 * S), runs, found)  # the stream goes quiet: everything closes

    assert assembler.late_spans == 0
    expected_runs = {t.trace_id: run_of(t.trace_id, {s.span_id: s for s in t.spans}) for t in generated}
    assert {trace_id: row for trace_id, (_, row) in runs.items()} == expected_runs
    expected_found = {
        (f.trace_id, f.kind, f.subject): f
        for t in generated
        for f in findings(t.trace_id, {s.span_id: s for s in t.spans}, SETTINGS.rules, final=True)
    }
    assert {key: row for key, (_, row) in found.items()} == expected_found


def test_no_false_loop_without_repeated_arguments() -> None:
    """Runs that call the same tools many times with different (or unrecorded) arguments are not loops."""
    rng = random.Random(3)
    assembler = RunAssembler(RunSettings(rules=RunawayRules(loop_repeats=3)))
    reported: list[Finding] = []
    for trace in range(50):
        spans = [
            RunSpan(
                f"t{trace}",
                f"s{i}",
                "",
                "tool",
                "bot",
                rng.choice(["search", "fetch"]),
                T0 + i * S,
                T0 + i * S + 1,
                False,
                args_digest(json.dumps({"page": i})) if i % 2 else "",
            )
            for i in range(20)
        ]
        reported += assembler.add("p0", trace, spans, T0).findings
    reported += assembler.close(T0 + 10**6 * S).findings
    assert [f for f in reported if f.kind == "tool_loop"] == []


def test_a_run_stays_open_through_a_pause_shorter_than_the_gap() -> None:
    """An agent waiting 90 s on a slow tool is one run, not two: the watermark passing the pause (lateness 10 s)
    does not close it while the gap (120 s) has not passed."""
    assembler = RunAssembler(RunSettings(gap_s=120, lateness_s=10))
    first = _span("a", "", "agent", "a", 0, 1)
    assembler.add("p0", 0, [first], T0 + S)
    assembler.add("p0", 1, [replace(first, trace_id="other", span_id="o", end_ns=T0 + 95 * S)], T0 + 95 * S)
    assert assembler.close(T0 + 95 * S).runs == []  # watermark 85 s: past the pause, not past the gap
    assembler.add("p0", 2, [_span("b", "a", "tool", "slow", 90, 91)], T0 + 96 * S)
    assembler.add("p0", 3, [replace(first, trace_id="other", span_id="o2", end_ns=T0 + 300 * S)], T0 + 300 * S)
    (run,) = [r for r in assembler.close(T0 + 300 * S).runs if r.trace_id == "t1"]
    assert run.spans == 2 and run.end_ns == T0 + 91 * S


def test_a_trace_of_llm_calls_only_closes_after_the_short_gap() -> None:
    """A plain request's calls close after `calls_gap_s`; a run with an agent waits the full gap."""
    assembler = RunAssembler(RunSettings(gap_s=120, calls_gap_s=5, lateness_s=0))
    assembler.add("p0", 0, [replace(_span("c", "x", "llm", "gpt-4o", 0, 1), trace_id="calls")], T0)
    assembler.add("p0", 1, [_span("a", "", "agent", "a", 0, 1)], T0)
    assembler.add("p0", 2, [replace(_span("o", "", "llm", "gpt-4o", 0, 10), trace_id="other")], T0 + 10 * S)
    assert [r.trace_id for r in assembler.close(T0 + 10 * S).runs] == ["calls"]  # 1 + 5 < 10 < 1 + 120
    assert assembler.committable("p0", 3) == 1  # the agent run's record is the first still needed
    # A tool span turns a run of calls into an agent run: it waits the full gap from then on.
    assembler.add("p0", 3, [replace(_span("c2", "", "llm", "gpt-4o", 10, 11), trace_id="mixed")], T0 + 11 * S)
    assembler.add("p0", 4, [replace(_span("t", "c2", "tool", "search", 11, 12), trace_id="mixed")], T0 + 12 * S)
    assembler.add("p0", 5, [replace(_span("o2", "", "llm", "gpt-4o", 30, 40), trace_id="later")], T0 + 40 * S)
    assert [r.trace_id for r in assembler.close(T0 + 40 * S).runs] == ["other"]


def test_close_all_writes_open_runs_as_far_as_they_got_and_drop_source_forgets_them() -> None:
    assembler = RunAssembler(RunSettings(gap_s=120, lateness_s=10))
    assembler.add("p0", 7, [_span("a", "", "agent", "a", 0, 1)], T0 + S)
    assembler.add("p1", 3, [replace(_span("x", "", "agent", "x", 0, 1), trace_id="t2")], T0 + S)
    assembler.add("p0", 8, [_span("b", "a", "tool", "slow", 1, 2)], T0 + 2 * S)
    assert assembler.committable("p0", 9) == 7 and assembler.committable("p1", 4) == 3
    assert assembler.drop_source("p1") == 1 and assembler.committable("p1", 4) == 4
    closed = assembler.close_all()
    assert [(r.trace_id, r.spans) for r in closed.runs] == [("t1", 2)] and closed.origins == {"t1": ("p0", 7)}
    assert assembler.open_runs == 0


def test_a_span_sent_twice_is_one_span() -> None:
    """An exporter's retry repeats spans: one tool call delivered five times is neither five calls nor a loop."""
    assembler = RunAssembler(RunSettings(rules=RunawayRules(loop_repeats=3)))
    tool = _span("t", "", "tool", "check", 0, 1, tool_args=args_digest("{}"))
    reported = [f for i in range(5) for f in assembler.add("p0", i, [tool], T0).findings]
    closed = assembler.close(T0 + 10**6 * S)
    assert reported == [] and closed.findings == [] and [r.tool_calls for r in closed.runs] == [1]
    assert assembler.duplicate_spans == 4


# -- the keyed agent-span topic's records (processors/core/agents/wire.py) -----------------------------------------

names = st.text(max_size=20)
wire_spans = st.builds(
    RunSpan,
    trace_id=st.sampled_from(["t1", "t2", "t3"]),
    span_id=st.text(min_size=1, max_size=16),
    parent_span_id=names,
    role=st.sampled_from(["agent", "tool", "llm", "chain", "evaluator"]),
    service=names,
    name=names,
    start_ns=st.integers(0, 2**63 - 1),
    end_ns=st.integers(0, 2**63 - 1),
    error=st.booleans(),
    tool_args=names,
    mcp=st.booleans(),
    input_tokens=st.integers(0, 10**12),
    output_tokens=st.integers(0, 10**12),
    cost=st.one_of(st.none(), st.integers(0, 10**20).map(lambda n: Decimal(n).scaleb(-12))),
)


def _wire_order(span: RunSpan) -> tuple:
    return (span.trace_id, span.span_id, *span.order_key())


@settings(max_examples=150, deadline=None)
@given(
    spans=st.lists(wire_spans, max_size=40),
    partitions=st.integers(1, 6),
    max_bytes=st.sampled_from([200, 2_000, 500_000]),
)
def test_records_carry_every_span_exactly_partitioned_by_trace_and_under_the_size(
    spans: list[RunSpan], partitions: int, max_bytes: int
) -> None:
    records = encode_run_spans(spans, partitions, max_bytes)
    decoded = [(partition, span) for partition, value in records for span in decode_run_spans(value)]
    assert sorted((s for _, s in decoded), key=_wire_order) == sorted(spans, key=_wire_order)
    # Every span of a trace in the one partition its trace id gives, whatever batch it was encoded in.
    assert all(partition == partition_of(span.trace_id, partitions) for partition, span in decoded)
    assert all(0 <= partition < partitions for partition, _ in records)
    assert all(len(value) <= max_bytes or len(decode_run_spans(value)) == 1 for _, value in records)
    assert all(decode_run_spans(value) for _, value in records)  # no empty record


_ROW = '"t", "s", "", "llm", "svc", "n", 1, 2, false, "", false, "", "", 0, 0, null'


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        b'{"trace_id": "t"}',
        b'{"spans": {}}',
        b'{"spans": [[1, 2]]}',
        ('{"spans": [[' + _ROW.replace('"llm"', '"robot"') + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace("1, 2,", "-1, 2,") + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace("2, false,", "2, 0,") + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace("null", '"NaN"') + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace("null", '"1e"') + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace('"s"', '""') + "]]}").encode(),
        ('{"spans": [[' + _ROW.replace('"t"', '""', 1) + "]]}").encode(),
        b"{" + b" " * 1_000_001 + b"}",
    ],
)
def test_a_record_no_worker_wrote_is_refused_with_what_is_wrong(value: bytes) -> None:
    assert len(decode_run_spans(('{"spans": [[' + _ROW + "]]}").encode())) == 1  # each case differs from a good row
    with pytest.raises(MalformedRunRecord, match="agent"):
        decode_run_spans(value)
