"""The agents scenario's ground truth: what each acknowledged run holds and costs, counted apart from the pipeline.

Why: the agent-run stage, the runaway rules and the evaluation stage are checked against it to the
token and to the exact cost. The plan (`loadgen_agents.py`) records the facts of every span it
emits; a fact counts once the exporter acknowledged its span (a failed export leaves it out, as the
LLM-call summary does). Costs come from `PRICES`, a table of the few models the scenario uses, not
from the pipeline's pricer: `tests/test_loadgen_agents.py` checks the table against the pipeline's
catalog at the run's time, so a price change there shows up as a failing test, not as a silently
agreeing truth. The tally keeps the facts of every acknowledged span until the summary is built (a few
hundred bytes per span), which bounds a run of the scenario to millions of spans, not an endless one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "PRICES",
    "ModelPrice",
    "Evaluation",
    "SpanFacts",
    "RunFacts",
    "RunTruth",
    "LoopTruth",
    "EvaluationTruth",
    "AgentTruth",
    "AgentTally",
    "render_truth",
]

_MILLION = Decimal(1_000_000)
_MAX_DURATION_NS = 900 * 10**9  # processors.core.agents.runaway.RunawayRules.max_duration_s; runs stay far below


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """List prices in USD per million tokens (standard tier, below any long-context threshold)."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> Decimal:
        """Exact cost; `input_tokens` includes cache reads and writes (OTel GenAI semantics)."""
        uncached = input_tokens - cache_read - cache_write
        return (
            uncached * self.input
            + cache_read * self.cache_read
            + cache_write * self.cache_write
            + output_tokens * self.output
        ) / _MILLION


_GPT_4O = ModelPrice(Decimal("2.50"), Decimal("1.25"), Decimal("2.50"), Decimal("10.00"))
_GPT_4O_MINI = ModelPrice(Decimal("0.15"), Decimal("0.075"), Decimal("0.15"), Decimal("0.60"))
_SONNET_4 = ModelPrice(Decimal(3), Decimal("0.30"), Decimal("3.75"), Decimal(15))

# The billed model (response model; the request model of a call that failed before answering) -> price.
# OpenAI has no cache-write price: cache writes are billed as input. Hard-wired on purpose (see module doc).
PRICES: dict[str, ModelPrice] = {
    "gpt-4o": _GPT_4O,
    "gpt-4o-2024-08-06": _GPT_4O,
    "gpt-4o-mini": _GPT_4O_MINI,
    "gpt-4o-mini-2024-07-18": _GPT_4O_MINI,
    "claude-sonnet-4-20250514": _SONNET_4,
}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One `gen_ai.evaluation.result` event as planned (OTel GenAI semconv 1.38)."""

    name: str
    score: float | None  # None: the evaluator gives a label only
    label: str
    explanation: str
    response_id: str = ""  # gen_ai.response.id of the evaluated call, when it is one


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What one planned span adds to its run's truth."""

    role: str  # agent | tool | llm | chain
    label: str  # agent or tool name; the billed model of an LLM call; the workflow name of a chain
    start_ns: int
    end_ns: int
    error: bool
    depth: int = 0  # agents: 1 for the outermost agent
    arguments: str = ""  # tools: canonical JSON of the arguments the span carries
    mcp: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: Decimal | None = None  # LLM calls
    evaluations: tuple[Evaluation, ...] = ()


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the plan decided for a whole run."""

    trace_id: int
    index: int
    kind: str  # plain | loop | varied | runaway | costly
    convention: str  # otel_genai | openinference | openllmetry
    service: str
    user_id: str
    conversation_id: str


@dataclass(frozen=True, slots=True)
class RunTruth:
    """One run as the acknowledged spans make it: what an `agent_runs` row must say."""

    trace_id: str
    index: int
    kind: str
    convention: str
    service: str
    root_agent: str
    user_id: str
    conversation_id: str
    start_ns: int
    end_ns: int
    spans: int
    agent_invocations: int
    agent_depth: int
    llm_calls: int
    tool_calls: int
    tool_calls_by_name: dict[str, int]
    mcp_tool_calls: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    errors: int
    models: int
    findings: tuple[str, ...]  # runaway kinds the run crosses: tool_loop, llm_calls, cost, duration


@dataclass(frozen=True, slots=True)
class LoopTruth:
    """One tool called with the same arguments at least `loop_repeats` times in a run, and what was spent meanwhile."""

    trace_id: str
    tool: str
    arguments: str  # canonical JSON
    repeats: int
    first_ns: int  # first of these calls' start
    last_ns: int  # their newest end
    input_tokens: int  # LLM calls of the run that started within [first_ns, last_ns]
    output_tokens: int
    cost: Decimal


@dataclass(frozen=True, slots=True)
class EvaluationTruth:
    """One acknowledged evaluation result and the span it was attached to."""

    trace_id: str
    span_id: str
    target: str  # llm | agent: the role of the evaluated span
    evaluator: str
    score: float | None
    label: str
    explanation: str


@dataclass(slots=True)
class AgentTruth:
    """Every acknowledged run, loop and evaluation of an agents-scenario run."""

    loop_repeats: int
    max_llm_calls: int
    max_cost_usd: Decimal
    runs: list[RunTruth] = field(default_factory=list)
    loops: list[LoopTruth] = field(default_factory=list)
    evaluations: list[EvaluationTruth] = field(default_factory=list)
    evaluations_by_evaluator: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Run:
    facts: RunFacts
    spans: dict[int, SpanFacts] = field(default_factory=dict)


class AgentTally:
    """Facts of planned spans, counted when their span is acknowledged (called from exporter threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], tuple[RunFacts, SpanFacts]] = {}
        self._runs: dict[int, _Run] = {}
        self.failed = 0

    def expect(self, run: RunFacts, spans: Sequence[tuple[int, SpanFacts]]) -> None:
        """Register a run's (span id, facts) before any of its spans is ended."""
        with self._lock:
            for span_id, facts in spans:
                self._pending[(run.trace_id, span_id)] = (run, facts)

    def record(self, spans: Sequence[ReadableSpan], ok: bool) -> None:
        with self._lock:
            for span in spans:
                ctx = span.context
                if ctx is None:
                    continue
                found = self._pending.pop((ctx.trace_id, ctx.span_id), None)
                if found is None:
                    continue
                if not ok:
                    self.failed += 1
                    continue
                run, facts = found
                self._runs.setdefault(run.trace_id, _Run(run)).spans[ctx.span_id] = facts

    def usage(self, by: str) -> dict[str, dict[str, int]]:
        """Acknowledged LLM calls and tokens per request model (`by="model"`) or per service."""
        out: dict[str, Counter[str]] = {}
        with self._lock:
            for run in self._runs.values():
                for facts in run.spans.values():
                    if facts.role != "llm":
                        continue
                    key = facts.label if by == "model" else run.facts.service
                    totals = out.setdefault(key, Counter())
                    totals["calls"] += 1
                    totals["errors"] += facts.error
                    totals["input_tokens"] += facts.input_tokens
                    totals["output_tokens"] += facts.output_tokens
                    totals["cache_read_tokens"] += facts.cache_read_tokens
                    totals["cache_write_tokens"] += facts.cache_write_tokens
        return {key: dict(totals) for key, totals in sorted(out.items())}

    def truth(self, loop_repeats: int, max_llm_calls: int, max_cost_usd: Decimal) -> AgentTruth:
        """The ground truth of everything acknowledged so far (call after the exporters flushed)."""
        out = AgentTruth(loop_repeats, max_llm_calls, max_cost_usd)
        with self._lock:
            runs = sorted(self._runs.values(), key=lambda r: r.facts.index)
            for run in runs:
                loops = _loops(run, loop_repeats)
                out.loops.extend(loops)
                out.runs.append(_run_truth(run, bool(loops), max_llm_calls, max_cost_usd))
                out.evaluations.extend(_evaluations(run))
        out.evaluations_by_evaluator = dict(sorted(Counter(e.evaluator for e in out.evaluations).items()))
        return out


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def _run_truth(run: _Run, looped: bool, max_llm_calls: int, max_cost_usd: Decimal) -> RunTruth:
    spans = list(run.spans.values())
    agents = [s for s in spans if s.role == "agent"]
    llm = [s for s in spans if s.role == "llm"]
    tools = [s for s in spans if s.role == "tool"]
    cost = sum((s.cost for s in llm if s.cost is not None), Decimal(0))
    start, end = min(s.start_ns for s in spans), max(s.end_ns for s in spans)
    findings = [
        kind
        for kind, crossed in (
            ("tool_loop", looped),
            ("llm_calls", len(llm) > max_llm_calls),
            ("cost", cost > max_cost_usd),
            ("duration", end - start > _MAX_DURATION_NS),
        )
        if crossed
    ]
    f = run.facts
    return RunTruth(
        trace_id=_hex(f.trace_id),
        index=f.index,
        kind=f.kind,
        convention=f.convention,
        service=f.service,
        root_agent=next((s.label for s in agents if s.depth == 1), ""),
        user_id=f.user_id,
        conversation_id=f.conversation_id,
        start_ns=start,
        end_ns=end,
        spans=len(spans),
        agent_invocations=len(agents),
        agent_depth=max((s.depth for s in agents), default=0),
        llm_calls=len(llm),
        tool_calls=len(tools),
        tool_calls_by_name=dict(sorted(Counter(s.label for s in tools).items())),
        mcp_tool_calls=sum(s.mcp for s in tools),
        input_tokens=sum(s.input_tokens for s in llm),
        output_tokens=sum(s.output_tokens for s in llm),
        cost=cost,
        errors=sum(s.error for s in spans),
        models=len({s.label for s in llm}),
        findings=tuple(findings),
    )


def _loops(run: _Run, loop_repeats: int) -> list[LoopTruth]:
    calls: dict[tuple[str, str], list[SpanFacts]] = {}
    for facts in run.spans.values():
        if facts.role == "tool" and facts.arguments:
            calls.setdefault((facts.label, facts.arguments), []).append(facts)
    llm = [s for s in run.spans.values() if s.role == "llm"]
    out = []
    for (tool, arguments), repeated in sorted(calls.items()):
        if len(repeated) < loop_repeats:
            continue
        first, last = min(s.start_ns for s in repeated), max(s.end_ns for s in repeated)
        spent = [s for s in llm if first <= s.start_ns <= last]
        out.append(
            LoopTruth(
                trace_id=_hex(run.facts.trace_id),
                tool=tool,
                arguments=arguments,
                repeats=len(repeated),
                first_ns=first,
                last_ns=last,
                input_tokens=sum(s.input_tokens for s in spent),
                output_tokens=sum(s.output_tokens for s in spent),
                cost=sum((s.cost for s in spent if s.cost is not None), Decimal(0)),
            )
        )
    return out


def _evaluations(run: _Run) -> list[EvaluationTruth]:
    return [
        EvaluationTruth(
            trace_id=_hex(run.facts.trace_id),
            span_id=format(span_id, "016x"),
            target=facts.role,
            evaluator=e.name,
            score=e.score,
            label=e.label,
            explanation=e.explanation,
        )
        for span_id, facts in sorted(run.spans.items(), key=lambda item: (item[1].start_ns, item[0]))
        for e in facts.evaluations
    ]


_RUN_ROW = "{:<32}  {:<18}  {:<18}  {:<7}  {:>5}  {:>3}  {:>5}  {:>3}  {:>11}  {:>9}  {:>10}"


def render_truth(truth: AgentTruth, max_runs: int = 200) -> list[str]:
    """Text lines: one per run (up to `max_runs`), one per loop, the evaluations per evaluator."""
    total = sum((r.cost for r in truth.runs), Decimal(0))
    lines = [
        (
            f"agent runs: {len(truth.runs):,} acknowledged, cost {total:.6f} USD; "
            f"{len(truth.loops)} loops (same tool and arguments >= {truth.loop_repeats}), "
            f"{sum('llm_calls' in r.findings for r in truth.runs)} runs over {truth.max_llm_calls} LLM calls, "
            f"{sum('cost' in r.findings for r in truth.runs)} over {truth.max_cost_usd} USD"
        ),
        "",
        _RUN_ROW.format(
            "trace_id", "service", "root_agent", "kind", "depth", "llm", "tools", "mcp", "input", "output", "cost_usd"
        ),
    ]
    for r in truth.runs[:max_runs]:
        lines.append(
            _RUN_ROW.format(
                r.trace_id,
                r.service[:18],
                r.root_agent[:18],
                r.kind,
                r.agent_depth,
                r.llm_calls,
                r.tool_calls,
                r.mcp_tool_calls,
                f"{r.input_tokens:,}",
                f"{r.output_tokens:,}",
                f"{r.cost:.6f}",
            )
        )
    if len(truth.runs) > max_runs:
        lines.append(f"... {len(truth.runs) - max_runs:,} more runs (--json prints them all)")
    lines.append("")
    for loop in truth.loops:
        lines.append(
            f"loop: {loop.trace_id} {loop.tool} x{loop.repeats} {loop.arguments} "
            f"(LLM calls meanwhile: {loop.input_tokens:,} in, {loop.output_tokens:,} out, {loop.cost:.6f} USD)"
        )
    evaluations = ", ".join(f"{name} {n}" for name, n in truth.evaluations_by_evaluator.items())
    lines.append(f"evaluations: {len(truth.evaluations)} ({evaluations or 'none'})")
    return lines
