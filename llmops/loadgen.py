"""Synthetic GenAI traffic sent through the real OpenTelemetry SDK (`llmops loadgen`).

Why: demos, integration tests and benchmarks need what real apps send (several
services, providers and models, streamed and plain calls, errors, prompt
versions, an optional drift) through the same SDK exporters apps use, and they
need to know exactly what arrived, so downstream totals can be checked to the
token. Every call is planned from (seed, call index) alone, so a seed fixes the
traffic, ids included, and the drift scenario changes the drifted key only.

The agents scenario (`loadgen_agents.py`) sends agent runs instead, and returns their ground
truth (`loadgen_truth.py`) in the summary. The options and the SDK wiring are `loadgen_sdk.py`.

The summary is counted from the spans the exporter acknowledged
(`SpanExportResult.SUCCESS`), never from what was merely planned.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmops.loadgen_agents import RunEmitter, plan_run
from llmops.loadgen_sdk import DEFAULT_SERVICES, LoadgenOptions, PlannedIds, Senders, timeline
from llmops.loadgen_truth import AgentTally, AgentTruth, render_truth

__all__ = [
    "DEFAULT_SERVICES",
    "LoadgenOptions",
    "UsageTotals",
    "DriftInfo",
    "LoadgenSummary",
    "run_loadgen",
    "render_summary",
]

LLM_OPERATIONS: frozenset[str] = frozenset({"chat", "text_completion", "embeddings"})
CHUNK_EVENT = "gen_ai.content.completion.chunk"  # OpenLLMetry's streamed-chunk span event
TTFT_ATTRIBUTE = "gen_ai.response.time_to_first_chunk"  # OTel GenAI, seconds

_ERROR_SHARE = 0.02
_ERROR_TYPES = (("RateLimitError", 0.5), ("InternalServerError", 0.3), ("APITimeoutError", 0.2))
_REFUSAL = "I'm sorry, but I can't help with that request."
_WORDS = (
    "your order ticket refund account shipping policy item payment delivery update status "
    "please check the details below we can help with this request thanks for waiting "
    "here is a summary of options available today you may also review settings and history"
).split()
_TOKENS_PER_CONTENT_WORD = 13  # content is a scaled-down stand-in for the answer, keeping spans small


@dataclass(slots=True)
class UsageTotals:
    """Acknowledged LLM calls and their token usage for one model or service."""

    calls: int = 0
    errors: int = 0
    streamed: int = 0
    ttft_attribute: int = 0  # calls carrying gen_ai.response.time_to_first_chunk
    ttft_event: int = 0  # calls carrying a gen_ai.content.completion.chunk event
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class DriftInfo:
    """Which key drifted, and where: the first call of the key on the new prompt version."""

    service: str
    model: str  # request model
    prompt_name: str
    from_version: str
    to_version: str
    switch_call_index: int  # -1 when the key had no call after the midpoint
    switch_time_ns: int  # start of that call, 0 when none
    calls_before: int
    calls_after: int


@dataclass(slots=True)
class LoadgenSummary:
    """What was sent and acknowledged. `by_model` is keyed by request model.

    In the agents scenario `calls_planned`/`calls_sent` count agent runs, `first_call_ns`/`last_call_ns`
    are the starts of the first and last run, and `agents` holds the ground truth."""

    endpoint: str
    protocol: str
    scenario: str
    seed: int
    calls_planned: int
    calls_sent: int = 0
    spans_sent: int = 0
    spans_acknowledged: int = 0
    spans_failed: int = 0
    llm_spans_acknowledged: int = 0
    first_call_ns: int = 0
    last_call_ns: int = 0
    time_step_ns: int = 0
    elapsed_s: float = 0.0
    by_model: dict[str, UsageTotals] = field(default_factory=dict)
    by_service: dict[str, UsageTotals] = field(default_factory=dict)
    spans_by_service: dict[str, int] = field(default_factory=dict)
    drift: DriftInfo | None = None
    agents: AgentTruth | None = None

    @property
    def complete(self) -> bool:
        """True when every sent span was acknowledged by the endpoint."""
        return self.spans_acknowledged == self.spans_sent

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (exact amounts as decimal strings)."""
        out = _jsonable(asdict(self))
        out["complete"] = self.complete
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, slots=True)
class _Model:
    provider: str
    request_model: str
    response_model: str
    operation: str
    input_median: float
    input_sigma: float
    output_median: float  # 0: no output tokens (embeddings)
    output_sigma: float
    ttft_median_s: float
    tokens_per_s: float
    cache_read_share: float = 0.0  # probability a call reads from the prompt cache
    cache_block: int = 1  # cache reads come in multiples of this
    cache_min_input: int = 0
    cache_write_share: float = 0.0
    reasoning_share: float = 0.0  # probability a call reports reasoning tokens
    max_input: int = 128_000


_GPT_4O = _Model("openai", "gpt-4o", "gpt-4o-2024-08-06", "chat", 2500, 1.0, 300, 0.8, 0.6, 70, 0.35, 128, 1024)
_GPT_4O_MINI = _Model(
    "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "chat", 1200, 1.0, 180, 0.8, 0.35, 90, 0.35, 128, 1024
)
_O4_MINI = _Model(
    "openai",
    "o4-mini",
    "o4-mini-2025-04-16",
    "chat",
    3000,
    0.9,
    900,
    0.7,
    2.5,
    110,
    0.3,
    128,
    1024,
    reasoning_share=1.0,
)
_CLAUDE = _Model(
    "anthropic",
    "claude-sonnet-4",
    "claude-sonnet-4-20250514",
    "chat",
    4000,
    1.1,
    250,
    0.7,
    1.1,
    60,
    cache_read_share=0.5,
    cache_min_input=1024,
    cache_write_share=0.15,
    max_input=200_000,
)
_GEMINI = _Model(
    "gcp.gemini",
    "gemini-2.5-flash",
    "gemini-2.5-flash",
    "chat",
    2000,
    1.0,
    250,
    0.9,
    0.3,
    180,
    cache_read_share=0.2,
    cache_min_input=1024,
    reasoning_share=0.6,
    max_input=1_000_000,
)
_ACME = _Model(
    "acme.vllm", "acme-llama-ft-v3", "acme-llama-ft-v3", "text_completion", 600, 0.6, 120, 0.6, 0.15, 45, max_input=8192
)
_EMBED = _Model(
    "openai", "text-embedding-3-small", "text-embedding-3-small", "embeddings", 400, 1.2, 0, 0, 0.08, 0, max_input=8191
)


@dataclass(frozen=True, slots=True)
class _Route:
    model: _Model
    weight: float
    path: str
    prompt_name: str = ""
    prompt_version: str = ""
    agent: str = ""
    max_tokens: int = 0
    stream_share: float = 0.0
    tool_call_share: float = 0.0
    refusal_share: float = 0.02
    collection: str = ""  # retrieval before the LLM call when set


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    team: str
    version: str
    weight: float
    capture_content: bool  # puts answers in gen_ai.output.messages
    routes: tuple[_Route, ...]


_CATALOG: tuple[_Service, ...] = (
    _Service(
        "checkout-assistant",
        "commerce",
        "2.14.0",
        0.35,
        False,
        (
            _Route(_GPT_4O_MINI, 0.6, "/assist", "checkout-help", "v7", "checkout-agent", 2048, 0.6, 0.15),
            _Route(_GPT_4O, 0.25, "/summary", "order-summary", "v2", "", 1024, 0.3),
            _Route(_O4_MINI, 0.15, "/review", "fraud-review", "v1", "fraud-reviewer", 4096),
        ),
    ),
    _Service(
        "support-bot",
        "customer-care",
        "1.8.3",
        0.4,
        True,
        (
            _Route(_CLAUDE, 0.55, "/chat", "support-answer", "v3", "support-agent", 1024, 0.8, 0.05),
            _Route(_GEMINI, 0.3, "/triage", "ticket-triage", "v5", "triage-agent", 1024, 0.5),
            _Route(_ACME, 0.15, "/rewrite", "tone-rewrite", "v1", "", 512),
        ),
    ),
    _Service(
        "search-rag",
        "search",
        "0.9.1",
        0.25,
        False,
        (
            _Route(_GPT_4O, 0.5, "/ask", "rag-answer", "v12", "", 2048, 0.7, collection="kb-articles"),
            _Route(_GEMINI, 0.2, "/ask", "rag-answer", "v12", "", 2048, 0.7, collection="kb-articles"),
            _Route(_EMBED, 0.3, "/index"),
        ),
    ),
)

_DRIFT_TO_VERSION = "v4"
_DRIFT_OUTPUT_FACTOR = 2.4  # answers get longer, so more of them hit max_tokens (finish_reason length)
_DRIFT_REFUSAL_SHARE = 0.12


def _service_profile(name: str) -> _Service:
    for service in _CATALOG:
        if service.name == name:
            return service
    return _Service(
        name,
        "platform",
        "1.0.0",
        0.2,
        False,
        (_Route(_GPT_4O_MINI, 1.0, "/chat", f"{name}-default", "v1", "", 1024, 0.5),),
    )


@dataclass(frozen=True, slots=True)
class _DriftTarget:
    service: str
    route: _Route
    switch_index: int

    def drifted(self, service: _Service, route: _Route, index: int) -> bool | None:
        """None: another key; False/True: this key before/after the switch."""
        if service.name != self.service or route != self.route:
            return None
        return index >= self.switch_index


def _drift_target(services: Sequence[_Service], total: int) -> _DriftTarget:
    """The first chat route with a prompt, preferring services that capture content."""
    ranked = sorted(services, key=lambda s: not s.capture_content)
    for service in ranked:
        for route in service.routes:
            if route.model.operation == "chat" and route.prompt_name:
                return _DriftTarget(service.name, route, total // 2)
    raise ValueError("the drift scenario needs a service with a prompted chat route")


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True, slots=True)
class _Call:
    """Everything about one request, decided before any span exists."""

    service: _Service
    route: _Route
    prompt_version: str
    drifted: bool | None
    trace_id: int
    span_ids: tuple[int, ...]
    retrieval_ns: int
    duration_ns: int
    ttft_ns: int  # 0: not reported
    ttft_source: str  # "attribute" | "event" | ""
    streamed: bool
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    error_type: str
    finish_reason: str
    output_messages: str

    @property
    def span_count(self) -> int:
        return 3 if self.route.collection else 2


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(median), sigma)


def _plan_call(seed: int, index: int, services: Sequence[_Service], drift: _DriftTarget | None) -> _Call:
    """Plan call `index` from (seed, index) alone, so other calls never shift it."""
    rng = random.Random(f"{seed}:{index}")
    trace_id = rng.getrandbits(128) or 1
    span_ids = tuple(rng.getrandbits(64) or 1 for _ in range(3))
    service = rng.choices(services, weights=[s.weight for s in services])[0]
    route = rng.choices(service.routes, weights=[r.weight for r in service.routes])[0]
    model = route.model
    drifted = drift.drifted(service, route, index) if drift else None
    output_median = model.output_median * (_DRIFT_OUTPUT_FACTOR if drifted else 1.0)
    refusal_share = _DRIFT_REFUSAL_SHARE if drifted else route.refusal_share
    error_type = (
        rng.choices([e for e, _ in _ERROR_TYPES], weights=[w for _, w in _ERROR_TYPES])[0]
        if rng.random() < _ERROR_SHARE
        else ""
    )
    streamed = model.operation != "embeddings" and rng.random() < route.stream_share  # embeddings never stream
    retrieval_ns = round(_lognormal(rng, 0.045, 0.5) * 1e9) if route.collection else 0

    input_tokens = min(max(8, round(_lognormal(rng, model.input_median, model.input_sigma))), model.max_input)
    cache_read = cache_write = 0
    if input_tokens >= model.cache_min_input and rng.random() < model.cache_read_share:
        cache_read = int(input_tokens * rng.uniform(0.3, 0.95)) // model.cache_block * model.cache_block
    if rng.random() < model.cache_write_share:
        cache_write = round((input_tokens - cache_read) * rng.uniform(0.2, 0.8))

    output_tokens = reasoning = 0
    finish_reason, refusal = "", False
    chat_like = model.operation != "embeddings"
    if chat_like and rng.random() < route.tool_call_share:
        output_tokens, finish_reason = rng.randint(15, 90), "tool_calls"
    elif chat_like:
        output_tokens = max(1, round(_lognormal(rng, output_median, model.output_sigma)))
        finish_reason = "stop"
        if output_tokens >= route.max_tokens:
            output_tokens, finish_reason = route.max_tokens, "length"
        refusal = rng.random() < refusal_share and finish_reason == "stop"
        if refusal:
            output_tokens = rng.randint(8, 30)
    if output_tokens and rng.random() < model.reasoning_share:
        reasoning = round(output_tokens * rng.uniform(0.3, 0.8))

    ttft_s = _lognormal(rng, model.ttft_median_s * (1 + input_tokens / 40_000), 0.45)
    ttft_source = "attribute" if rng.random() < 0.5 else "event"
    duration_s = ttft_s
    if chat_like:
        duration_s += max(0, output_tokens - 1) / (model.tokens_per_s * _lognormal(rng, 1.0, 0.2))
    if error_type == "APITimeoutError":
        duration_s = 60.0
    elif error_type:
        duration_s = _lognormal(rng, 0.3, 0.8)
    duration_ns = max(1_000_000, round(duration_s * 1e9))
    ttft_ns = min(round(ttft_s * 1e9), duration_ns) if streamed and not error_type else 0

    capture = service.capture_content or drifted is not None
    messages = ""
    if capture and chat_like and not error_type:
        messages = _output_messages(rng, finish_reason, refusal, output_tokens - reasoning, span_ids[0])
    if error_type:
        input_tokens = output_tokens = cache_read = cache_write = reasoning = 0
        finish_reason, messages = "", ""
    return _Call(
        service=service,
        route=route,
        prompt_version=_DRIFT_TO_VERSION if drifted else route.prompt_version,
        drifted=drifted,
        trace_id=trace_id,
        span_ids=span_ids,
        retrieval_ns=retrieval_ns,
        duration_ns=duration_ns,
        ttft_ns=ttft_ns,
        ttft_source=ttft_source if ttft_ns else "",
        streamed=streamed,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        error_type=error_type,
        finish_reason=finish_reason,
        output_messages=messages,
    )


def _output_messages(rng: random.Random, finish_reason: str, refusal: bool, visible_tokens: int, call_id: int) -> str:
    """gen_ai.output.messages JSON (OTel GenAI OutputMessage); text scaled down to keep spans small."""
    if finish_reason == "tool_calls":
        part: dict[str, Any] = {
            "type": "tool_call",
            "id": f"call_{call_id:016x}",
            "name": "lookup_order",
            "arguments": {"order_id": f"A{rng.randint(1000, 9999)}"},
        }
        reason = "tool_call"
    else:
        if refusal:
            text = _REFUSAL
        else:
            words = rng.choices(_WORDS, k=min(120, max(2, round(visible_tokens / _TOKENS_PER_CONTENT_WORD))))
            text = " ".join(words).capitalize() + ("" if finish_reason == "length" else ".")
        part, reason = {"type": "text", "content": text}, finish_reason
    return json.dumps([{"role": "assistant", "parts": [part], "finish_reason": reason}], separators=(",", ":"))


# --------------------------------------------------------------------------- SDK wiring


class _Tally:
    """Counts acknowledged spans from their own attributes (called from exporter threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acknowledged = 0
        self.failed = 0
        self.llm_spans = 0
        self.by_model: dict[str, UsageTotals] = {}
        self.by_service: dict[str, UsageTotals] = {}
        self.spans_by_service: dict[str, int] = {}

    def record(self, spans: Sequence[ReadableSpan], ok: bool) -> None:
        with self._lock:
            if not ok:
                self.failed += len(spans)
                return
            self.acknowledged += len(spans)
            for span in spans:
                service = str(span.resource.attributes.get("service.name", ""))
                self.spans_by_service[service] = self.spans_by_service.get(service, 0) + 1
                attrs = span.attributes or {}
                if attrs.get("gen_ai.operation.name") not in LLM_OPERATIONS:
                    continue
                self.llm_spans += 1
                model = str(attrs.get("gen_ai.request.model", ""))
                for totals in (
                    self.by_model.setdefault(model, UsageTotals()),
                    self.by_service.setdefault(service, UsageTotals()),
                ):
                    _add_call(totals, span, attrs)


def _add_call(totals: UsageTotals, span: ReadableSpan, attrs: Any) -> None:
    totals.calls += 1
    totals.errors += span.status.status_code is StatusCode.ERROR
    totals.streamed += attrs.get("gen_ai.request.stream") is True
    totals.ttft_attribute += TTFT_ATTRIBUTE in attrs
    totals.ttft_event += any(event.name == CHUNK_EVENT for event in span.events)
    totals.input_tokens += int(attrs.get("gen_ai.usage.input_tokens", 0))
    totals.output_tokens += int(attrs.get("gen_ai.usage.output_tokens", 0))
    totals.cache_read_tokens += int(attrs.get("gen_ai.usage.cache_read.input_tokens", 0))
    totals.cache_write_tokens += int(attrs.get("gen_ai.usage.cache_creation.input_tokens", 0))
    totals.reasoning_tokens += int(attrs.get("gen_ai.usage.reasoning.output_tokens", 0))


def _emit(call: _Call, tracer: trace_api.Tracer, ids: PlannedIds, llm_start_ns: int) -> None:
    """Create and end the request's spans with explicit timestamps."""
    route, model = call.route, call.route.model
    ids.load(call.trace_id, call.span_ids)
    root_start = llm_start_ns - call.retrieval_ns - (2_000_000 if call.retrieval_ns else 1_000_000)
    root = tracer.start_span(
        f"POST {route.path}",
        kind=SpanKind.SERVER,
        start_time=root_start,
        attributes={"http.request.method": "POST", "http.route": route.path},
    )
    ctx = trace_api.set_span_in_context(root)
    if route.collection:
        retrieval = tracer.start_span(
            f"search {route.collection}",
            ctx,
            SpanKind.CLIENT,
            start_time=root_start + 500_000,
            attributes={
                "db.system.name": "qdrant",
                "db.operation.name": "search",
                "db.collection.name": route.collection,
            },
        )
        retrieval.end(end_time=llm_start_ns - 500_000)
    llm = tracer.start_span(
        f"{model.operation} {model.request_model}", ctx, SpanKind.CLIENT, _llm_attributes(call), start_time=llm_start_ns
    )
    if call.ttft_source == "event":
        llm.add_event(CHUNK_EVENT, timestamp=llm_start_ns + call.ttft_ns)
    if call.error_type:
        llm.set_status(Status(StatusCode.ERROR, call.error_type))
        root.set_status(Status(StatusCode.ERROR))
    llm_end = llm_start_ns + call.duration_ns
    llm.end(end_time=llm_end)
    root.set_attribute("http.response.status_code", 502 if call.error_type else 200)
    root.end(end_time=llm_end + 1_000_000)


def _llm_attributes(call: _Call) -> dict[str, Any]:
    route, model = call.route, call.route.model
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": model.operation,
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model.request_model,
    }
    if route.prompt_name:
        attrs["gen_ai.prompt.name"] = route.prompt_name
        attrs["gen_ai.prompt.version"] = call.prompt_version
    if route.agent:
        attrs["gen_ai.agent.name"] = route.agent
    if route.max_tokens:
        attrs["gen_ai.request.max_tokens"] = route.max_tokens
    if call.streamed:
        attrs["gen_ai.request.stream"] = True
    if call.error_type:
        attrs["error.type"] = call.error_type
        return attrs
    attrs["gen_ai.response.model"] = model.response_model
    attrs["gen_ai.usage.input_tokens"] = call.input_tokens
    if model.operation != "embeddings":
        attrs["gen_ai.usage.output_tokens"] = call.output_tokens
        attrs["gen_ai.response.finish_reasons"] = (call.finish_reason,)
    if call.cache_read_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = call.cache_read_tokens
    if call.cache_write_tokens:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = call.cache_write_tokens
    if call.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = call.reasoning_tokens
    if call.ttft_source == "attribute":
        attrs[TTFT_ATTRIBUTE] = call.ttft_ns / 1e9
    if call.output_messages:
        attrs["gen_ai.output.messages"] = call.output_messages
    return attrs


# --------------------------------------------------------------------------- run


def run_loadgen(options: LoadgenOptions, progress: Callable[[int, int], None] | None = None) -> LoadgenSummary:
    """Send the planned calls (agents scenario: runs) through one SDK TracerProvider per service; flush; count
    acknowledgements.

    LLM call (run) i starts at start_ns + i * time_step_ns (event time). Rate mode paces
    call i at i / rate seconds on the monotonic clock; count mode waits only for
    queue room. `progress(sent, total)` is called about every 1% of calls.
    """
    total = options.total_calls
    services = [_service_profile(name) for name in options.services]
    agents = options.scenario == "agents"
    drift = _drift_target(services, total) if options.scenario == "drift" else None
    start_ns, step_ns = timeline(options, total)
    tally, agent_tally = _Tally(), AgentTally()
    senders = Senders(
        options, {s.name: (s.version, s.team) for s in services}, [tally, agent_tally] if agents else [tally]
    )
    summary = LoadgenSummary(
        endpoint=options.endpoint,
        protocol=options.protocol,
        scenario=options.scenario,
        seed=options.seed,
        calls_planned=total,
        first_call_ns=start_ns,
        time_step_ns=step_ns,
    )
    drift_seen = {"before": 0, "after": 0, "index": -1}
    emitter = RunEmitter(senders.tracers, senders.flows, senders.ids, agent_tally)
    every = max(1, total // 100)
    began = time.monotonic()
    try:
        for index in range(total):
            if options.stop_on_failure and tally.failed:
                break
            if options.rate is not None:
                delay = began + index / options.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if agents:
                run_start = start_ns + index * step_ns
                emitter.end_until(run_start)  # what ended before this run starts leaves first
                sent = emitter.start(plan_run(options.seed, index, options.services, options), run_start)
            else:
                call = _plan_call(options.seed, index, services, drift)
                senders.flows[call.service.name].reserve(call.span_count)
                _emit(call, senders.tracers[call.service.name], senders.ids, start_ns + index * step_ns)
                sent = call.span_count
                if call.drifted is not None:
                    drift_seen["after" if call.drifted else "before"] += 1
                    if call.drifted and drift_seen["index"] < 0:
                        drift_seen["index"] = index
            summary.calls_sent += 1
            summary.spans_sent += sent
            if progress is not None and ((index + 1) % every == 0 or index + 1 == total):
                progress(index + 1, total)
    finally:
        emitter.end_until()
        senders.close()
    summary.elapsed_s = time.monotonic() - began
    summary.last_call_ns = start_ns + max(0, summary.calls_sent - 1) * step_ns
    summary.spans_acknowledged, summary.spans_failed = tally.acknowledged, tally.failed
    summary.spans_by_service = dict(sorted(tally.spans_by_service.items()))
    if agents:
        # Model calls of every convention (the span tally sees only OTel GenAI's gen_ai.operation.name).
        summary.by_model = {k: UsageTotals(**v) for k, v in agent_tally.usage("model").items()}
        summary.by_service = {k: UsageTotals(**v) for k, v in agent_tally.usage("service").items()}
        summary.llm_spans_acknowledged = sum(t.calls for t in summary.by_model.values())
        summary.agents = agent_tally.truth(options.loop_repeats, options.max_llm_calls, options.max_cost_usd)
    else:
        summary.llm_spans_acknowledged = tally.llm_spans
        summary.by_model = dict(sorted(tally.by_model.items()))
        summary.by_service = dict(sorted(tally.by_service.items()))
    if drift is not None:
        switch = drift_seen["index"]
        summary.drift = DriftInfo(
            service=drift.service,
            model=drift.route.model.request_model,
            prompt_name=drift.route.prompt_name,
            from_version=drift.route.prompt_version,
            to_version=_DRIFT_TO_VERSION,
            switch_call_index=switch,
            switch_time_ns=start_ns + switch * step_ns if switch >= 0 else 0,
            calls_before=drift_seen["before"],
            calls_after=drift_seen["after"],
        )
    return summary


# --------------------------------------------------------------------------- text output

_COLUMNS = (
    "calls",
    "errors",
    "streamed",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_HEADERS = ("calls", "errors", "streamed", "input", "output", "cache_read", "cache_write", "reasoning")


def _table(title: str, rows: dict[str, UsageTotals]) -> list[str]:
    body = [[name, *(f"{getattr(t, c):,}" for c in _COLUMNS)] for name, t in rows.items()]
    head = [title, *_HEADERS]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in [head, *body]
    ]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_summary(summary: LoadgenSummary) -> str:
    """Compact text report: totals, a table per model and per service, and the agent runs' ground truth or the
    drift, if any."""
    rate = summary.calls_sent / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    unit = ("agent runs", "runs") if summary.scenario == "agents" else ("LLM calls", "calls")
    lines = [
        (
            f"{summary.calls_sent:,}/{summary.calls_planned:,} {unit[0]}, {summary.spans_sent:,} spans sent, "
            f"{summary.spans_acknowledged:,} acknowledged, {summary.spans_failed:,} failed "
            f"in {summary.elapsed_s:.2f} s ({rate:,.0f} {unit[1]}/s) -> {summary.protocol} {summary.endpoint}"
        ),
        (
            f"event time {_iso(summary.first_call_ns)} .. {_iso(summary.last_call_ns)}, "
            f"scenario {summary.scenario}, seed {summary.seed}"
        ),
        "",
        *_table("model", summary.by_model),
        "",
        *_table("service", summary.by_service),
    ]
    if summary.agents is not None:
        lines += ["", *render_truth(summary.agents)]
    if summary.drift is not None:
        d = summary.drift
        where = (
            f"call {d.switch_call_index} ({_iso(d.switch_time_ns)})"
            if d.switch_call_index >= 0
            else "no call after the midpoint"
        )
        lines += [
            "",
            (
                f"drift: {d.service} / {d.model} / {d.prompt_name}: {d.from_version} -> {d.to_version} at {where}, "
                f"{d.calls_before} calls before, {d.calls_after} after"
            ),
        ]
    return "\n".join(lines)
