"""The agents scenario of `llmops loadgen`: agent runs planned from (seed, run index) alone, sent through the SDK.

Why: agent runs, runaway findings and evaluations must be checked on what agent frameworks really
send: one trace per run, nested agents, model calls, tool and MCP tool calls, evaluation events,
in three conventions, split over many OTLP requests and out of order. Each run is one trace of one
service:

- an agent span at the top (OTel GenAI `invoke_agent`; OpenInference `AGENT`; OpenLLMetry a
  `workflow` with an `agent` inside), sub-agents nested 1 to 3 deep, each agent alternating chat
  calls of priced models with tool calls (OTel `execute_tool`, OpenInference `TOOL`, OpenLLMetry
  `tool`) whose arguments are JSON; in OTel runs some tools are MCP tools (`mcp.method.name`
  `tools/call`, as the MCP semantic conventions put it on the tool span; a few instead say
  `gen_ai.tool.type` `mcp`, as some platforms write it);
- `user.id` and the conversation id (`gen_ai.conversation.id`, OpenInference `session.id`,
  OpenLLMetry association properties) on the agent and model spans; some calls fail;
- `gen_ai.evaluation.result` events (OTel GenAI 1.38) on some model calls and some agent spans.

Kinds of run: `plain`; `loop` (one tool called with the same arguments `loop_repeats` to
`loop_repeats` + 3 times, the JSON written with its keys in a different order each time);
`varied` (one tool called as often, with different arguments each time: no loop); `runaway` (more
than `max_llm_calls` model calls on a growing context); `costly` (a sub-agent reading long
documents, over the default cost threshold). A plain run never repeats a call `loop_repeats`
times and stays under `max_llm_calls`.

Spans are ended in event-time order across runs (`RunEmitter`), each up to 2 s late, so a run's
spans leave the BatchSpanProcessor between other runs' spans, over several requests, children and
parents in either order. What the run holds is recorded per span for the ground truth
(`loadgen_truth.py`), counted once acknowledged.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmops.loadgen_sdk import Flow, LoadgenOptions, PlannedIds
from llmops.loadgen_truth import PRICES, AgentTally, Evaluation, RunFacts, SpanFacts

__all__ = [
    "AgentApp",
    "RunPlan",
    "PlannedSpan",
    "RunEmitter",
    "agent_app",
    "plan_run",
    "EVALUATION_EVENT",
    "EXPORT_JITTER_NS",
]

EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
EXPORT_JITTER_NS: Final = 2_000_000_000  # a span reaches the exporter up to this long after it ended
_KINDS: Final = (("plain", 0.60), ("loop", 0.14), ("varied", 0.14), ("runaway", 0.06), ("costly", 0.06))
_CONVENTIONS: Final = (("otel_genai", 0.7), ("openinference", 0.15), ("openllmetry", 0.15))
_MS: Final = 1_000_000
_WORDS: Final = (
    "refund order shipping invoice address payment delay warranty return coupon account password "
    "billing tracking carrier damaged missing upgrade plan cancel subscription export report latency "
    "timeout release migration quota region index"
).split()
_MCP_PROTOCOL_VERSION: Final = "2025-06-18"


@dataclass(frozen=True, slots=True)
class _Model:
    provider: str
    request_model: str
    response_model: str
    input_median: float
    output_median: float
    cache_read_share: float
    cache_write_share: float  # Anthropic prompt caching


_GPT_4O: Final = _Model("openai", "gpt-4o", "gpt-4o-2024-08-06", 3000, 250, 0.3, 0.0)
_GPT_4O_MINI: Final = _Model("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 2000, 180, 0.3, 0.0)
_SONNET: Final = _Model(
    "anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514", 4000, 300, 0.4, 0.15
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Agent:
    name: str
    model: _Model


@dataclass(frozen=True, slots=True)
class AgentApp:
    """A service's agents and tools."""

    root: _Agent
    subs: tuple[_Agent, ...]
    tools: tuple[str, ...]
    mcp_tools: tuple[str, ...]


_APPS: Final = {
    "checkout-assistant": AgentApp(
        _Agent("checkout-agent", _GPT_4O_MINI),
        (_Agent("payment-agent", _GPT_4O_MINI), _Agent("fraud-reviewer", _GPT_4O)),
        ("lookup_order", "get_shipping_status", "apply_coupon"),
        ("payments.get_refund_status",),
    ),
    "support-bot": AgentApp(
        _Agent("support-agent", _SONNET),
        (_Agent("triage-agent", _GPT_4O_MINI), _Agent("kb-researcher", _SONNET)),
        ("search_kb", "get_ticket", "update_ticket"),
        ("github.search_issues", "filesystem.read_file"),
    ),
    "search-rag": AgentApp(
        _Agent("research-agent", _GPT_4O),
        (_Agent("retriever-agent", _GPT_4O_MINI), _Agent("summarizer-agent", _GPT_4O_MINI)),
        ("vector_search", "fetch_url"),
        ("web.fetch",),
    ),
}
_ANALYST: Final = _Agent("document-analyst", _SONNET)  # costly runs: long documents, large contexts

# Each tool's arguments: (key, kind of value).
_TOOL_ARGS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "lookup_order": (("order_id", "order"),),
    "get_shipping_status": (("order_id", "order"), ("include_history", "bool")),
    "apply_coupon": (("order_id", "order"), ("code", "code")),
    "payments.get_refund_status": (("refund_id", "refund"),),
    "search_kb": (("query", "query"), ("top_k", "int")),
    "get_ticket": (("ticket_id", "ticket"),),
    "update_ticket": (("ticket_id", "ticket"), ("status", "status")),
    "github.search_issues": (("repo", "repo"), ("query", "query")),
    "filesystem.read_file": (("path", "path"),),
    "vector_search": (("query", "query"), ("top_k", "int"), ("collection", "collection")),
    "fetch_url": (("url", "url"),),
    "web.fetch": (("url", "url"), ("max_length", "int")),
}


def agent_app(service: str) -> AgentApp:
    """The service's agents and tools; an unknown service gets a generic app."""
    app = _APPS.get(service)
    if app is not None:
        return app
    return AgentApp(
        _Agent(f"{service}-agent", _GPT_4O_MINI), (_Agent("helper-agent", _GPT_4O_MINI),), ("lookup",), ("docs.search",)
    )


def _value(rng: random.Random, kind: str) -> Any:
    if kind in ("order", "refund", "ticket"):
        return f"{kind[0].upper()}{rng.randint(10_000, 99_999)}"
    if kind == "query":
        return " ".join(rng.sample(_WORDS, 3))
    if kind == "int":
        return rng.choice((3, 5, 10, 20))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "code":
        return f"SAVE{rng.randint(5, 50)}"
    if kind == "status":
        return rng.choice(("open", "pending", "solved"))
    if kind == "repo":
        return rng.choice(("acme/checkout", "acme/support-bot", "acme/search"))
    if kind == "path":
        return f"/docs/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}.md"
    if kind == "url":
        return f"https://kb.example.com/{rng.choice(_WORDS)}/{rng.randint(1, 999)}"
    return "kb-articles"  # collection


def _draw_args(rng: random.Random, tool: str) -> dict[str, Any]:
    return {key: _value(rng, kind) for key, kind in _TOOL_ARGS.get(tool, (("query", "query"),))}


def _canonical(args: Any) -> str:
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _written(rng: random.Random, args: dict[str, Any]) -> str:
    """The arguments as a caller writes them: keys in any order, with or without spaces."""
    keys = list(args)
    rng.shuffle(keys)
    return json.dumps({k: args[k] for k in keys}, separators=(", ", ": ") if rng.random() < 0.5 else (",", ":"))


@dataclass(slots=True)
class PlannedSpan:
    """One span as it will be sent, and its facts for the ground truth."""

    span_id: int
    parent: int  # index in RunPlan.spans; -1 for the run's top span
    name: str
    kind: SpanKind
    start_ns: int  # relative to the run's start
    end_ns: int
    attributes: dict[str, Any]
    error_type: str
    facts: SpanFacts


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run: its facts, its spans in start order (parents first), and when each is handed to the exporter
    (its end plus a jitter of up to `EXPORT_JITTER_NS`, relative to the run's start)."""

    run: RunFacts
    spans: tuple[PlannedSpan, ...]
    export_ns: tuple[int, ...]


@dataclass(slots=True)
class _Builder:
    """Lays a run's spans out one after another in event time and writes each convention's attributes."""

    rng: random.Random
    run: RunFacts
    options: LoadgenOptions
    spans: list[PlannedSpan] = field(default_factory=list)
    t: int = 0  # event-time cursor, ns from the run's start
    used: Counter[str] = field(default_factory=Counter)  # canonical arguments of this run's plain tool calls
    llm_calls: int = 0

    # ----------------------------------------------------------------- spans

    def _ids(self) -> int:
        return self.rng.getrandbits(64) or 1

    def _add(
        self, parent: int, name: str, kind: SpanKind, duration: int, attrs: dict[str, Any], facts: SpanFacts
    ) -> int:
        start = self.t
        end = start + duration
        self.spans.append(PlannedSpan(self._ids(), parent, name, kind, start, end, attrs, "", facts))
        self.t = end + self.rng.randint(1, 20) * _MS
        return len(self.spans) - 1

    def _common(self) -> dict[str, Any]:
        """User and conversation, as each convention writes them."""
        user, conversation = self.run.user_id, self.run.conversation_id
        if self.run.convention == "openinference":
            return {"user.id": user, "session.id": conversation}
        if self.run.convention == "openllmetry":
            return {
                "user.id": user,
                "traceloop.association.properties.user_id": user,
                "traceloop.association.properties.session_id": conversation,
            }
        return {"user.id": user, "gen_ai.conversation.id": conversation}

    def open_span(self, parent: int, role: str, label: str, depth: int) -> int:
        """An agent (or OpenLLMetry workflow) span; its end is set by `close_span`."""
        convention = self.run.convention
        attrs = self._common()
        if role == "chain":
            attrs |= {
                "traceloop.span.kind": "workflow",
                "traceloop.entity.name": label,
                "traceloop.workflow.name": label,
            }
            name = f"{label}.workflow"
        elif convention == "openinference":
            attrs |= {"openinference.span.kind": "AGENT", "agent.name": label}
            name = label
        elif convention == "openllmetry":
            attrs |= {
                "traceloop.span.kind": "agent",
                "traceloop.entity.name": label,
                "traceloop.workflow.name": self.spans[0].facts.label,  # the workflow, as OpenLLMetry propagates it
            }
            name = f"{label}.agent"
        else:
            attrs |= {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": label,
                "gen_ai.agent.id": f"asst_{uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]}",
            }
            name = f"invoke_agent {label}"
        start = self.t
        facts = SpanFacts(role=role, label=label, start_ns=start, end_ns=start, error=False, depth=depth)
        self.spans.append(PlannedSpan(self._ids(), parent, name, SpanKind.INTERNAL, start, start, attrs, "", facts))
        self.t = start + self.rng.randint(1, 5) * _MS
        return len(self.spans) - 1

    def close_span(self, index: int) -> None:
        """End an open span after its last child; some agents get a task-completion evaluation."""
        span = self.spans[index]
        span.end_ns = max(self.t, span.start_ns + _MS)
        evaluations: tuple[Evaluation, ...] = ()
        if span.facts.role == "agent" and self.rng.random() < 0.3:
            success = self.rng.random() < 0.8
            evaluations = (
                Evaluation(
                    "task_completion",
                    1.0 if success else 0.0,
                    "success" if success else "failure",
                    "The agent resolved the request." if success else "The agent gave up before resolving the request.",
                ),
            )
        span.facts = replace(span.facts, end_ns=span.end_ns, evaluations=evaluations)
        self.t = span.end_ns + self.rng.randint(1, 10) * _MS

    def llm(self, parent: int, agent: _Agent, step: int, final: bool, input_tokens: int = 0) -> None:
        """One chat call of `agent`; `step` grows the context; `input_tokens` overrides the drawn size."""
        rng, model = self.rng, agent.model
        self.llm_calls += 1
        error_type = "RateLimitError" if rng.random() < 0.03 else ""
        tin = input_tokens or min(60_000, max(50, round(_lognormal(rng, model.input_median, 0.5))) + 400 * step)
        cache_read = cache_write = 0
        if not input_tokens and tin >= 1024 and rng.random() < model.cache_read_share:
            cache_read = int(tin * rng.uniform(0.3, 0.9))
        if not input_tokens and rng.random() < model.cache_write_share:
            cache_write = round((tin - cache_read) * rng.uniform(0.2, 0.8))
        tout = (
            rng.randint(15, 120) if not final else min(2048, max(1, round(_lognormal(rng, model.output_median, 0.6))))
        )
        duration = round(min(4.0, max(0.2, _lognormal(rng, 0.8 + tout / 150, 0.3))) * 1e9)
        response_id = (
            f"msg_{rng.getrandbits(96):024x}"
            if model.provider == "anthropic"
            else f"chatcmpl-{rng.getrandbits(96):024x}"
        )
        if error_type:
            tin = tout = cache_read = cache_write = 0
            duration = round(rng.uniform(0.05, 0.4) * 1e9)
        billed = model.request_model if error_type else model.response_model
        cost = PRICES[billed].cost(tin, tout, cache_read, cache_write)
        evaluations: tuple[Evaluation, ...] = ()
        if not error_type and rng.random() < 0.15:
            evaluations = (_evaluation(rng, response_id),)
        attrs = self._common() | self._llm_attributes(agent, model, error_type, tin, tout, cache_read, cache_write)
        if not error_type:
            attrs |= self._finish(model, final, response_id)
        name = {
            "otel_genai": f"chat {model.request_model}",
            "openinference": "ChatCompletion" if model.provider == "openai" else "Messages",
            "openllmetry": f"{model.provider}.chat",
        }[self.run.convention]
        facts = SpanFacts(
            role="llm",
            label=billed,
            start_ns=self.t,
            end_ns=self.t + duration,
            error=bool(error_type),
            input_tokens=tin,
            output_tokens=tout,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost=cost,
            evaluations=evaluations,
        )
        index = self._add(parent, name, SpanKind.CLIENT, duration, attrs, facts)
        self.spans[index].error_type = error_type
        if error_type:  # the agent retries the call
            self.llm(parent, agent, step, final, input_tokens)

    def _llm_attributes(
        self, agent: _Agent, model: _Model, error_type: str, tin: int, tout: int, cache_read: int, cache_write: int
    ) -> dict[str, Any]:
        convention = self.run.convention
        if convention == "openinference":
            attrs: dict[str, Any] = {
                "openinference.span.kind": "LLM",
                "llm.provider": model.provider,
                "llm.system": model.provider,
                "llm.model_name": model.request_model if error_type else model.response_model,
            }
            usage: dict[str, Any] = {
                "llm.token_count.prompt": tin,
                "llm.token_count.completion": tout,
                "llm.token_count.total": tin + tout,
            }
            cache_keys = ("llm.token_count.prompt_details.cache_read", "llm.token_count.prompt_details.cache_write")
        elif convention == "openllmetry":
            attrs = {
                "llm.request.type": "chat",
                "gen_ai.system": model.provider,
                "gen_ai.request.model": model.request_model,
                "traceloop.workflow.name": self.spans[0].facts.label,
            }
            usage = {
                "gen_ai.response.model": model.response_model,
                "gen_ai.usage.prompt_tokens": tin,
                "gen_ai.usage.completion_tokens": tout,
                "llm.usage.total_tokens": tin + tout,
            }
            cache_keys = ("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_creation_input_tokens")
        else:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": model.provider,
                "gen_ai.request.model": model.request_model,
                "gen_ai.agent.name": agent.name,
            }
            usage = {
                "gen_ai.response.model": model.response_model,
                "gen_ai.usage.input_tokens": tin,
                "gen_ai.usage.output_tokens": tout,
            }
            cache_keys = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens")
        if error_type:  # a failed call reports no usage
            return attrs | {"error.type": error_type}
        attrs |= usage
        if cache_read:
            attrs[cache_keys[0]] = cache_read
        if cache_write:
            attrs[cache_keys[1]] = cache_write
        return attrs

    def _finish(self, model: _Model, final: bool, response_id: str) -> dict[str, Any]:
        reason = "stop" if final else "tool_calls"
        if self.run.convention == "openinference":
            return {"llm.finish_reason": reason}  # OpenInference has no response id attribute
        if self.run.convention == "openllmetry":
            return {"gen_ai.response.id": response_id, "gen_ai.completion.0.finish_reason": reason}
        return {"gen_ai.response.id": response_id, "gen_ai.response.finish_reasons": (reason,)}

    def tool(self, parent: int, name: str, args: dict[str, Any], mcp: bool = False) -> None:
        """One tool call with `args` (written with shuffled keys); MCP tools only in OTel GenAI runs."""
        rng = self.rng
        written = _written(rng, args)
        duration = round(min(2.0, max(0.005, _lognormal(rng, 0.15, 0.8))) * 1e9)
        error_type = (
            ("tool_error" if mcp else rng.choice(("TimeoutError", "ToolExecutionError"))) if rng.random() < 0.06 else ""
        )
        convention = self.run.convention
        kind = SpanKind.INTERNAL
        if convention == "openinference":
            attrs: dict[str, Any] = {
                "openinference.span.kind": "TOOL",
                "tool.name": name,
                "input.value": written,
                "input.mime_type": "application/json",
            }
            span_name = name
        elif convention == "openllmetry":
            attrs = {
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": name,
                "traceloop.entity.input": json.dumps({"args": [], "kwargs": json.loads(written)}),
                "traceloop.workflow.name": self.spans[0].facts.label,
            }
            written = attrs["traceloop.entity.input"]
            span_name = f"{name}.tool"
        else:
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": f"call_{rng.getrandbits(96):024x}",
                "gen_ai.tool.call.arguments": written,
            }
            span_name = f"execute_tool {name}"
            if mcp and rng.random() < 0.75:  # the MCP semantic conventions' client span, on the tool span
                attrs |= {
                    "mcp.method.name": "tools/call",
                    "mcp.protocol.version": _MCP_PROTOCOL_VERSION,
                    "mcp.session.id": self.run.conversation_id,
                    "jsonrpc.request.id": str(rng.randint(1, 10_000)),
                    "network.transport": "tcp",
                    "server.address": f"mcp.{name.split('.')[0]}.internal",
                }
                span_name, kind = f"tools/call {name}", SpanKind.CLIENT
            else:
                attrs["gen_ai.tool.type"] = "mcp" if mcp else "function"
        if error_type:
            attrs["error.type"] = error_type
        facts = SpanFacts(
            role="tool",
            label=name,
            start_ns=self.t,
            end_ns=self.t + duration,
            error=bool(error_type),
            arguments=_canonical(json.loads(written)),
            mcp=mcp,
        )
        index = self._add(parent, span_name, kind, duration, attrs, facts)
        self.spans[index].error_type = error_type

    # ----------------------------------------------------------------- behaviour

    def plain_args(self, tool: str) -> dict[str, Any]:
        """Fresh arguments for a plain call: an exact repeat at most once, never `loop_repeats` times."""
        args = _draw_args(self.rng, tool)
        seen = self.used[_canonical(args)]
        self.used[_canonical(args)] += 1
        if seen == 0 or (seen == 1 and self.options.loop_repeats > 2):
            return args
        return args | {"page": seen + 1}

    def pick_tool(self, app: AgentApp) -> tuple[str, bool]:
        if self.run.convention == "otel_genai" and self.rng.random() < 0.3:
            return self.rng.choice(app.mcp_tools), True
        return self.rng.choice(app.tools), False

    def agent(self, parent: int, app: AgentApp, agent: _Agent, depth: int, max_depth: int, plan: list[str]) -> None:
        """One agent invocation: steps of (model call, tool calls or a sub-agent), then a final answer.

        `plan` holds what this run still has to do somewhere (`loop`, `varied`, `runaway`, `costly`):
        the deepest agent of the run does it."""
        rng = self.rng
        index = self.open_span(parent, "agent", agent.name, depth)
        step = 0
        subs = [s for s in app.subs if s.name != agent.name]
        if depth < max_depth:  # reach the planned depth: the first step delegates
            self.llm(index, agent, step, final=False)
            step += 1
            sub = _ANALYST if "costly" in plan and depth == max_depth - 1 else rng.choice(subs or list(app.subs))
            self.agent(index, app, sub, depth + 1, max_depth, plan)
        for _ in range(rng.randint(0, 2)):
            self.llm(index, agent, step, final=False)
            step += 1
            for _ in range(rng.randint(1, 2)):
                tool, mcp = self.pick_tool(app)
                self.tool(index, tool, self.plain_args(tool), mcp)
        if depth == max_depth and plan:
            self._special(index, app, agent, plan.pop(), step)
        self.llm(index, agent, step + 1, final=True)
        self.close_span(index)

    def _special(self, index: int, app: AgentApp, agent: _Agent, kind: str, step: int) -> None:
        rng, repeats = self.rng, self.options.loop_repeats
        if kind in ("loop", "varied"):
            tool, mcp = self.pick_tool(app)
            same = _draw_args(rng, tool)
            for i in range(repeats + rng.randint(0, 3)):
                self.llm(index, agent, step + i, final=False)
                self.tool(index, tool, same if kind == "loop" else self.plain_args(tool), mcp)
        elif kind == "runaway":
            extra = self.options.max_llm_calls + rng.randint(1, 8) - self.llm_calls
            for i in range(max(1, extra)):
                self.llm(index, agent, step + i, final=False, input_tokens=min(150_000, 2000 + 1500 * i))
                if i % 6 == 5:
                    tool, mcp = self.pick_tool(app)
                    self.tool(index, tool, self.plain_args(tool), mcp)
        elif kind == "costly":
            for i in range(rng.randint(12, 16)):
                self.llm(index, agent, step + i, final=False, input_tokens=rng.randint(150_000, 190_000))


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


def _evaluation(rng: random.Random, response_id: str) -> Evaluation:
    name = rng.choice(("relevance", "faithfulness", "tone"))
    if name == "relevance":
        score = round(rng.betavariate(5, 2), 2)
        label = "relevant" if score >= 0.5 else "not_relevant"
        return Evaluation(
            name, score, label, f"The answer addresses {round(score * 100)}% of the question.", response_id
        )
    if name == "faithfulness":
        points = float(rng.randint(1, 5))
        label = "pass" if points >= 3 else "fail"
        return Evaluation(name, points, label, "Claims checked against the retrieved context.", response_id)
    label = rng.choice(("polite", "polite", "neutral", "rude"))
    return Evaluation(name, None, label, "", response_id)  # a label-only evaluator


def plan_run(seed: int, index: int, services: Sequence[str], options: LoadgenOptions) -> RunPlan:
    """Plan run `index` from (seed, index) alone, so other runs never shift it."""
    rng = random.Random(f"{seed}:agents:{index}")
    trace_id = rng.getrandbits(128) or 1
    service = rng.choice(list(services))
    kind = rng.choices([k for k, _ in _KINDS], weights=[w for _, w in _KINDS])[0]
    convention = rng.choices([c for c, _ in _CONVENTIONS], weights=[w for _, w in _CONVENTIONS])[0]
    run = RunFacts(
        trace_id=trace_id,
        index=index,
        kind=kind,
        convention=convention,
        service=service,
        user_id=f"user-{rng.randint(1, 500):04d}",
        conversation_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    )
    app = agent_app(service)
    max_depth = 2 if kind == "costly" else rng.choice((1, 1, 2, 2, 3))
    builder = _Builder(rng, run, options)
    plan = [] if kind == "plain" else [kind]
    top = -1
    if convention == "openllmetry":
        top = builder.open_span(-1, "chain", f"{service}-workflow", 0)
    builder.agent(top, app, app.root, 1, max_depth, plan)
    if top >= 0:
        builder.close_span(top)
    export = tuple(s.end_ns + rng.randrange(EXPORT_JITTER_NS) for s in builder.spans)
    return RunPlan(run, tuple(builder.spans), export)


class RunEmitter:
    """Ends the spans of every started run in the order of their export times, across runs.

    An app's exporter sends a span when it ends, so a long run's spans reach the collector spread over
    many requests, between other runs' spans, children before parents. Here each span is ended at its
    end plus a jitter of up to `EXPORT_JITTER_NS` (as from several processes or exporters), so parents
    and children also arrive in either order. Ending in event-time order across runs keeps the
    traffic's disorder near the jitter however fast it is sent: a run is never closed by the pipeline
    because another run, minutes of event time later, was sent before its own last spans."""

    def __init__(
        self, tracers: Mapping[str, trace_api.Tracer], flows: Mapping[str, Flow], ids: PlannedIds, tally: AgentTally
    ) -> None:
        self._tracers = tracers
        self._flows = flows
        self._ids = ids
        self._tally = tally
        self._due: list[tuple[int, int, trace_api.Span, PlannedSpan, int, str]] = []  # heap by export time
        self._seq = 0

    def start(self, plan: RunPlan, start_ns: int) -> int:
        """Start the run's spans, parent first, at `start_ns` + their offsets; return the number of spans. The
        tally learns each span's facts before any is ended."""
        self._tally.expect(plan.run, [(s.span_id, _at(s.facts, start_ns)) for s in plan.spans])
        self._ids.load(plan.run.trace_id, [s.span_id for s in plan.spans])
        tracer, service = self._tracers[plan.run.service], plan.run.service
        live: list[trace_api.Span] = []
        for s, export in zip(plan.spans, plan.export_ns, strict=True):
            context = trace_api.set_span_in_context(live[s.parent]) if s.parent >= 0 else None
            span = tracer.start_span(s.name, context, s.kind, s.attributes, start_time=start_ns + s.start_ns)
            live.append(span)
            heapq.heappush(self._due, (start_ns + export, self._seq, span, s, start_ns, service))
            self._seq += 1
        return len(plan.spans)

    def end_until(self, ns: int | None = None) -> None:
        """End (hand to the exporter) every started span due at or before `ns`; all of them when None."""
        while self._due and (ns is None or self._due[0][0] <= ns):
            _, _, span, planned, start_ns, service = heapq.heappop(self._due)
            end = start_ns + planned.end_ns
            for e in planned.facts.evaluations:
                span.add_event(EVALUATION_EVENT, _event_attributes(e), timestamp=end)
            if planned.error_type:
                span.set_status(Status(StatusCode.ERROR, planned.error_type))
            self._flows[service].reserve(1)
            span.end(end_time=end)


def _at(facts: SpanFacts, start_ns: int) -> SpanFacts:
    """Facts with absolute event times."""
    return replace(facts, start_ns=start_ns + facts.start_ns, end_ns=start_ns + facts.end_ns)


def _event_attributes(e: Evaluation) -> dict[str, Any]:
    attrs: dict[str, Any] = {"gen_ai.evaluation.name": e.name, "gen_ai.evaluation.score.label": e.label}
    if e.score is not None:
        attrs["gen_ai.evaluation.score.value"] = e.score
    if e.explanation:
        attrs["gen_ai.evaluation.explanation"] = e.explanation
    if e.response_id:
        attrs["gen_ai.response.id"] = e.response_id
    return attrs
