"""Agent runs (issue 19) from a real agent framework's own instrumentation.

The OpenAI Agents SDK (`openai-agents`) runs a real agent workflow against a stand-in OpenAI
server on 127.0.0.1, traced by OpenInference's instrumentation for it
(`openinference-instrumentation-openai-agents`): a `concierge` agent calls a function tool twice
and a nested agent as a tool (`currency_agent`, with its own tool), then hands off to a `billing`
agent, which calls a tool and answers. The server plays a fixed script per agent and records what
it served. The spans go through the OTLP wire format and the pipeline's decoder, normaliser and
pricer, become run spans, and the run's row is compared with what the server served: LLM calls,
tool calls and their arguments, tokens and a hand-computed cost. The worker's decode filter keeps
every one of these spans. Both model APIs the SDK speaks are run (Responses, its default, and Chat
Completions): their LLM spans differ.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import agents
import pytest
from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool, handoff
from aiohttp import web
from openai import AsyncOpenAI
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processors.core.agents.runs import AgentRun, run_of
from processors.core.agents.spans import RunSpan, args_digest, run_span
from processors.core.decode import decode_request
from processors.core.normalize import normalize_call
from processors.core.pipeline import worth_decoding
from processors.core.pricer import Pricer, PricerSources
from tests.stand_in_server import serve_app

MODEL = "gpt-4o-2024-08-06"
# gpt-4o list prices, USD per million tokens: input 2.50, output 10.00 (no cached input is served here).
INPUT_PRICE, OUTPUT_PRICE, M = Decimal("2.50"), Decimal("10.00"), Decimal(1_000_000)
SERVICE = "concierge-app"


@dataclass(frozen=True)
class Call:
    tool: str
    arguments: dict[str, Any]


# What the stand-in model answers each agent, turn by turn: tool calls, or the final text.
# Agents are told apart by their instructions, which are their names.
SCRIPT: dict[str, list[list[Call] | str]] = {
    "concierge": [
        [
            Call("get_weather", {"city": "Paris"}),
            Call("get_weather", {"city": "Rome"}),  # one tool, two different calls: two different digests
            Call("currency_desk", {"input": "10 EUR in USD"}),
        ],
        [Call("transfer_to_billing", {})],
    ],
    "currency_agent": [[Call("convert", {"amount": 10, "currency": "EUR"})], "10 EUR is 11 USD."],
    "billing": [[Call("refund", {"order": 7})], "Order 7 is refunded."],
}


@dataclass
class StandIn:
    """The stand-in model server's record of what it served, request by request."""

    api: str  # "responses" or "chat_completions"
    turns: dict[str, int] = field(default_factory=dict)
    usages: list[tuple[int, int]] = field(default_factory=list)  # (input, output) tokens per request
    tool_calls: list[Call] = field(default_factory=list)

    def answer(self, agent: str) -> tuple[list[Call] | str, int, int]:
        turn = self.turns.get(agent, 0)
        self.turns[agent] = turn + 1
        n = len(self.usages) + 1
        usage = (1000 * n + 17, 10 * n + 3)  # distinct per request, so a call counted twice or lost shows
        self.usages.append(usage)
        reply = SCRIPT[agent][turn]
        if isinstance(reply, list):
            self.tool_calls += reply
        return reply, *usage


def _responses_reply(n: int, reply: list[Call] | str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    if isinstance(reply, str):
        content = [{"type": "output_text", "text": reply, "annotations": []}]
        output: list[dict[str, Any]] = [
            {"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed", "content": content}
        ]
    else:
        output = [
            {
                "type": "function_call",
                "id": f"fc_{n}_{i}",
                "call_id": f"call_{n}_{i}",
                "name": c.tool,
                "arguments": json.dumps(c.arguments),
                "status": "completed",
            }
            for i, c in enumerate(reply)
        ]
    return {
        "id": f"resp_{n}",
        "object": "response",
        "created_at": 1_700_000_000,
        "model": MODEL,
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
    }


def _chat_reply(n: int, reply: list[Call] | str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    if isinstance(reply, str):
        message: dict[str, Any] = {"role": "assistant", "content": reply}
    else:
        calls = [
            {
                "id": f"call_{n}_{i}",
                "type": "function",
                "function": {"name": c.tool, "arguments": json.dumps(c.arguments)},
            }
            for i, c in enumerate(reply)
        ]
        message = {"role": "assistant", "content": None, "tool_calls": calls}
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "stop" if isinstance(reply, str) else "tool_calls"}
        ],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out},
    }


def _serve(stand_in: StandIn) -> web.Application:
    async def responses(request: web.Request) -> web.Response:
        body = await request.json()
        reply = stand_in.answer(body["instructions"])
        return web.json_response(_responses_reply(len(stand_in.usages), *reply))

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        reply = stand_in.answer(body["messages"][0]["content"])  # the system message: the agent's instructions
        return web.json_response(_chat_reply(len(stand_in.usages), *reply))

    app = web.Application()
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(params=["responses", "chat_completions"])
def stand_in(request: pytest.FixtureRequest) -> Iterator[tuple[StandIn, int]]:
    served = StandIn(api=request.param)
    with serve_app(_serve(served)) as port:
        yield served, port


@pytest.fixture(scope="module")
def catalog() -> Pricer:
    return Pricer.load(PricerSources())


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The OpenInference instrumentation, exporting to memory through the OTel SDK."""
    # Nothing but the instrumentation receives the Agents SDK's traces (its default processor exports to
    # OpenAI's tracing service), and `uninstrument` puts back this empty list.
    agents.set_trace_processors([])
    agents.set_tracing_disabled(False)
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield memory
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def _run_workflow(api: str, port: int) -> tuple[str, list[str]]:
    """The agents, run once; (the final answer, the function tools that ran)."""
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Today's weather in a city."""
        ran.append("get_weather")
        return f"Sunny in {city}."

    @function_tool
    def convert(amount: float, currency: str) -> str:
        """Convert an amount to USD."""
        ran.append("convert")
        return f"{amount * 1.1:.2f} USD"

    @function_tool
    def refund(order: int) -> str:
        """Refund an order."""
        ran.append("refund")
        return f"Order {order} refunded."

    async def main() -> str:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)
        model: OpenAIResponsesModel | OpenAIChatCompletionsModel
        if api == "responses":
            model = OpenAIResponsesModel(model=MODEL, openai_client=client)
        else:
            model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
        currency = Agent(name="currency_agent", instructions="currency_agent", tools=[convert], model=model)
        billing = Agent(name="billing", instructions="billing", tools=[refund], model=model)
        concierge = Agent(
            name="concierge",
            instructions="concierge",
            tools=[get_weather, currency.as_tool("currency_desk", "Ask the currency desk.")],
            handoffs=[handoff(billing)],
            model=model,
        )
        try:
            result = await Runner.run(concierge, "Weather in Paris, 10 EUR in USD, and refund order 7.")
        finally:
            await client.close()
        return str(result.final_output)

    return asyncio.run(main()), ran


def _run_spans(memory: InMemorySpanExporter, catalog: Pricer, keep_all: bool) -> dict[str, dict[str, RunSpan]]:
    """The exported spans through OTLP, decoded (every span, or those the worker keeps), as run spans per trace."""
    finished = memory.get_finished_spans()
    payload = encode_spans(finished).SerializeToString()
    decoded = decode_request(payload) if keep_all else decode_request(payload, keep=worth_decoding)
    assert not decoded.problems
    if keep_all:
        assert len(decoded.spans) == len(finished)
    runs: dict[str, dict[str, RunSpan]] = {}
    for span in decoded.spans:
        call = normalize_call(span)
        if call is not None:
            catalog.enrich(span, call)
        part = run_span(span, call)
        if part is not None:
            runs.setdefault(part.trace_id, {})[part.span_id] = part
    return runs


def test_openai_agents_sdk_runs(stand_in: tuple[StandIn, int], exporter: InMemorySpanExporter, catalog: Pricer) -> None:
    served, port = stand_in
    answer, ran = _run_workflow(served.api, port)
    assert answer == SCRIPT["billing"][-1]
    # The script was played through: every agent took every turn, every function tool the model called ran.
    assert served.turns == {agent: len(turns) for agent, turns in SCRIPT.items()}
    handoffs = {"transfer_to_billing": "billing"}
    assert Counter(ran) == Counter(c.tool for c in served.tool_calls if c.tool not in {*handoffs, "currency_desk"})

    runs = _run_spans(exporter, catalog, keep_all=True)
    assert len(runs) == 1  # the workflow, nested agent included, is one trace: one run
    [(trace_id, spans)] = runs.items()
    run = run_of(trace_id, spans)

    llm = [s for s in spans.values() if s.role == "llm"]
    assert Counter((s.input_tokens, s.output_tokens) for s in llm) == Counter(served.usages)
    assert {s.name for s in llm} == {MODEL}
    # A handoff is a TOOL span in OpenInference, without a tool name: it is counted under its span name.
    expected_tools = Counter(
        f"handoff to {handoffs[c.tool]}" if c.tool in handoffs else c.tool for c in served.tool_calls
    )
    finished = exporter.get_finished_spans()
    expected_cost = sum(((i * INPUT_PRICE + o * OUTPUT_PRICE) / M for i, o in served.usages), Decimal(0))
    assert run == AgentRun(
        trace_id=trace_id,
        service=SERVICE,
        root_agent="concierge",
        user_id="",  # the Agents SDK sends none unless the app sets OpenInference's user context
        conversation_id="",
        # Every span the instrumentation wrote has a role here (agent, tool, LLM call or chain): all are in the run.
        start_ns=min(s.start_time or 0 for s in finished),
        end_ns=max(s.end_time or 0 for s in finished),
        spans=len(finished),
        agent_invocations=len(SCRIPT),
        llm_calls=len(served.usages),
        tool_calls=len(served.tool_calls),
        tool_calls_by_name=dict(expected_tools),
        mcp_tool_calls=0,
        input_tokens=sum(i for i, _ in served.usages),
        output_tokens=sum(o for _, o in served.usages),
        cost=expected_cost,
        unpriced_calls=0,
        errors=0,
        models=1,
        agent_depth=2,  # concierge -> currency_desk (tool) -> currency_agent
        truncated=False,
    )
    assert sorted(s.name for s in spans.values() if s.role == "agent") == sorted(SCRIPT)
    # Each tool span keeps the digest of the arguments the model sent (what the tool-loop rule compares), not of
    # the tool's schema (OpenInference `tool.parameters`), which is the same for every call of a tool.
    sent = [(c.tool, args_digest(json.dumps(c.arguments))) for c in served.tool_calls if c.tool not in handoffs]
    called = [(s.name, s.tool_args) for s in spans.values() if s.role == "tool" and s.name in dict(sent)]
    assert Counter(called) == Counter(sent)

    # The worker decodes only the spans `worth_decoding` marks: it keeps every span of this run.
    assert _run_spans(exporter, catalog, keep_all=False) == runs
