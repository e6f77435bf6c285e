"""What one span is to an agent run: its role (agent, tool, LLM call, ...) and the few values a run adds up.

The three conventions the pipeline reads name the same things differently:

| role | OTel GenAI `gen_ai.operation.name` | OpenInference `openinference.span.kind` | `traceloop.span.kind` |
|---|---|---|---|
| agent | `invoke_agent`, `create_agent` | `AGENT` | `agent` |
| tool | `execute_tool` (MCP: `mcp.method.name` = `tools/call`) | `TOOL` | `tool` |
| chain | — | `CHAIN` | `workflow`, `task` |
| evaluator | — | `EVALUATOR` | — |
| llm | an LLMCall from `normalize.normalize_call` (model calls of any convention) | | |

A tool span that carries no tool name is named by its span name: OpenInference's OpenAI Agents
instrumentation writes a handoff as a TOOL span named `handoff to <agent>` with no `tool.name`.
The same instrumentation opens each SDK trace (a workflow, which may run several agents) as an
AGENT span named after the workflow with no `agent.name`; that span is a chain here, so it is not
counted as an agent invocation nor taken for the root agent (`run_span`).

A `RunSpan` keeps only what the run's row and the runaway rules read, so an open run costs a few
hundred bytes per span (`tests/test_agent_runs.py` states the bound). Tool arguments are kept as a
digest of their canonical JSON: identical arguments written with different key order or spacing
are the same call, and the arguments themselves (user data, unbounded) are never held.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from processors.core.bounds import MAX_JSON_CHARS, MAX_LABEL_CHARS
from processors.core.records import LLMCall, SpanView

__all__ = ["AGENT_MARKER_KEYS", "ROLES", "RunSpan", "agent_tree", "args_digest", "run_span", "span_role"]

ROLES: Final = ("agent", "tool", "llm", "chain", "evaluator")

_OTEL_ROLES: Final = {"invoke_agent": "agent", "create_agent": "agent", "execute_tool": "tool"}
_OPENINFERENCE_ROLES: Final = {"AGENT": "agent", "TOOL": "tool", "CHAIN": "chain", "EVALUATOR": "evaluator"}
_TRACELOOP_ROLES: Final = {"agent": "agent", "tool": "tool", "workflow": "chain", "task": "chain"}

_AGENT_NAME_KEYS: Final = ("gen_ai.agent.name", "agent.name", "traceloop.entity.name", "graph.node.name")
_TOOL_NAME_KEYS: Final = ("gen_ai.tool.name", "tool.name", "traceloop.entity.name")
# OpenInference writes a tool call's arguments to `input.value`; its `tool.parameters` is the tool's JSON schema
# (the same for every call: read as arguments, every repeated tool would look like a loop).
_TOOL_ARGS_KEYS: Final = ("gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input")
_MCP_TOOL_CALL: Final = "tools/call"
# A span without any of these attribute keys has no role in a run (unless it is an LLM call): the worker's
# decode step builds SpanViews only for spans carrying one of them or an LLM marker.
AGENT_MARKER_KEYS: Final = frozenset(
    ("gen_ai.operation.name", "openinference.span.kind", "traceloop.span.kind", "mcp.method.name")
)
# openinference-instrumentation-openai-agents (2.6.0, `_processor.py`, `on_trace_start`): the SDK's trace,
# a workflow, as an AGENT span with no `agent.name`; the SDK's agents are its spans that carry `agent.name`.
_OPENAI_AGENTS_SCOPE: Final = "openinference.instrumentation.openai_agents"
_STATUS_ERROR: Final = 2


@dataclass(slots=True)  # not frozen: built for every span or run, and a frozen init costs ~8x
class RunSpan:
    """One span of a run, as much as the run's row and the runaway rules need."""

    trace_id: str
    span_id: str
    parent_span_id: str
    role: str  # one of ROLES
    service: str
    name: str  # agent or tool name; the billed model for an LLM call
    start_ns: int
    end_ns: int
    error: bool
    tool_args: str = ""  # digest of the canonical arguments; "" when the span does not carry them
    mcp: bool = False
    user_id: str = ""  # an LLM call's user and conversation, as llm_calls has them
    conversation_id: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal | None = None  # an LLM call's exact cost; None when unpriced or not an LLM call

    def order_key(self) -> tuple[Any, ...]:
        """A total order on span contents: of two copies of one span id, the run keeps the smaller."""
        return (
            self.start_ns,
            self.end_ns,
            self.role,
            self.name,
            self.parent_span_id,
            self.service,
            self.tool_args,
            self.error,
            self.mcp,
            self.user_id,
            self.conversation_id,
            self.input_tokens,
            self.output_tokens,
            str(self.cost),
        )


def span_role(attributes: dict[str, Any]) -> str | None:
    """The span's role in a run from its convention's own marker; None for a span no convention names."""
    kind = attributes.get("openinference.span.kind")
    if isinstance(kind, str):
        return _OPENINFERENCE_ROLES.get(kind.upper())
    kind = attributes.get("traceloop.span.kind")
    if isinstance(kind, str):
        return _TRACELOOP_ROLES.get(kind.lower())
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _OTEL_ROLES:
        return _OTEL_ROLES[operation]
    if attributes.get("mcp.method.name") == _MCP_TOOL_CALL:
        return "tool"
    return None


def args_digest(value: Any) -> str:
    """A digest of a tool call's arguments, equal for equal arguments however they were spelled."""
    if value is None:
        return ""
    if isinstance(value, str):
        if len(value) > MAX_JSON_CHARS:
            text = value  # too long to parse within the bound: digest the text as written
        else:
            try:
                text = json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            except (ValueError, RecursionError):
                text = value
    else:
        text = repr(value)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _label(attributes: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value[:MAX_LABEL_CHARS]
    return ""


def _service(span: SpanView) -> str:
    service = span.resource.get("service.name")
    return service[:MAX_LABEL_CHARS] if isinstance(service, str) else ""


def run_span(span: SpanView, call: LLMCall | None = None) -> RunSpan | None:
    """The span's part in its trace's run: an LLM call (given `call`, its normalised form) or a span a
    convention marks as an agent, tool, chain or evaluator; None for any other span."""
    if not span.trace_id or not span.span_id:
        return None
    end_ns = max(span.end_ns, span.start_ns)
    error = span.status_code == _STATUS_ERROR
    if call is not None:
        return RunSpan(
            span.trace_id, span.span_id, span.parent_span_id, "llm", _service(span), call.model[:MAX_LABEL_CHARS],
            span.start_ns, end_ns, error, user_id=call.user_id, conversation_id=call.conversation_id,
            input_tokens=call.input_tokens, output_tokens=call.output_tokens, cost=call.cost,
        )  # fmt: skip
    attributes = span.attributes
    role = span_role(attributes)
    if role is None:
        return None
    tool_args, mcp = "", False
    if role == "tool":
        mcp = attributes.get("mcp.method.name") == _MCP_TOOL_CALL or attributes.get("gen_ai.tool.type") == "mcp"
        tool_args = args_digest(next((attributes[key] for key in _TOOL_ARGS_KEYS if key in attributes), None))
        name = _label(attributes, _TOOL_NAME_KEYS) or span.name[:MAX_LABEL_CHARS]
    else:
        name = _label(attributes, _AGENT_NAME_KEYS)
        if role == "agent" and not name and span.scope_name == _OPENAI_AGENTS_SCOPE:
            role = "chain"  # the OpenAI Agents SDK's workflow, not an agent (see _OPENAI_AGENTS_SCOPE)
    return RunSpan(
        span.trace_id, span.span_id, span.parent_span_id, role, _service(span), name, span.start_ns, end_ns, error,
        tool_args, mcp,
    )  # fmt: skip


def agent_tree(spans: Mapping[str, RunSpan], ordered: Sequence[RunSpan]) -> tuple[int, str]:
    """(deepest nesting of agent spans, name of the outermost agent) through the known parent links.

    A parent id that is not in the run ends the walk (the nesting counted is then a lower bound); so
    does one that leads back into the walk (bad data). Spans are visited in `ordered` order, so even
    a cycle gives the same answer for every arrival order."""
    agents = [s for s in ordered if s.role == "agent"]
    if not agents:
        return 0, ""
    depth_of: dict[str, int] = {}
    for span in ordered:
        chain: list[str] = []
        seen: set[str] = set()
        current = span.span_id
        while current in spans and current not in depth_of and current not in seen:
            chain.append(current)
            seen.add(current)
            current = spans[current].parent_span_id
        known = depth_of.get(current, 0)
        for sid in reversed(chain):
            known += spans[sid].role == "agent"
            depth_of[sid] = known
    deepest = max((depth_of[s.span_id] for s in agents), default=0)
    root = next((s.name for s in agents if depth_of[s.span_id] == 1), "")
    return deepest, root
