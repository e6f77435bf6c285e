"""Spans from real instrumentation libraries, through the OTLP wire format, normalised and priced.

A stand-in OpenAI-compatible server (chat completions, streamed and not, with
cached and reasoning token details) and Anthropic Messages API (cache writes and
reads) runs on 127.0.0.1; the real `openai` / `anthropic` SDKs call it, each
instrumentation library in turn records spans, which are encoded to an OTLP
ExportTraceServiceRequest, decoded by processors.core.decode, normalised and priced,
and compared with a hand computation of tokens and cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processors.core.decode import decode_request
from processors.core.normalize import normalize_call
from processors.core.pricer import Pricer, PricerSources
from processors.core.records import LLMCall
from tests.stand_in_server import serve_app

M = Decimal(1_000_000)
OPENAI_MODEL = "gpt-4o-2024-08-06"
CHAT_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 50,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
ANTHROPIC_MODEL = "claude-sonnet-4-20250514"
# Anthropic's API: input_tokens EXCLUDES cache reads and writes.
ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 2000,
    "cache_read_input_tokens": 3000,
    "output_tokens": 700,
}

# Hand computations (list prices: gpt-4o 2.50 / cached 1.25 / 10.00; Sonnet 4 3 / write 3.75 / read 0.30 / 15).
GPT4O_FULL = (200 * Decimal("2.50") + 1000 * Decimal("1.25") + 300 * Decimal("10.00")) / M  # cache seen
GPT4O_NO_CACHE_INFO = (1200 * Decimal("2.50") + 300 * Decimal("10.00")) / M  # span without cache details
SONNET = (50 * Decimal(3) + 2000 * Decimal("3.75") + 3000 * Decimal("0.30") + 700 * Decimal(15)) / M


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": OPENAI_MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello there"},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": CHAT_USAGE,
                "system_fingerprint": "fp_1",
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": OPENAI_MODEL,
        "system_fingerprint": "fp_1",
    }
    chunks = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    chunks += [
        dict(base, choices=[{"index": 0, "delta": {"content": w}, "finish_reason": None}]) for w in ("Hello", " there")
    ]
    chunks.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    chunks.append(dict(base, choices=[], usage=CHAT_USAGE))
    for chunk in chunks:
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _messages(request: web.Request) -> web.Response:
    await request.json()
    return web.json_response(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }
    )


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/messages", _messages)
    with serve_app(app) as port:
        yield port


@pytest.fixture(scope="module")
def catalog() -> Pricer:
    return Pricer.load(PricerSources())


@pytest.fixture
def tracing() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "chat-api", "team": "search", "deployment.environment.name": "prod"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _calls(exporter: InMemorySpanExporter, scope: str, catalog: Pricer) -> list[LLMCall]:
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name == scope
    ]
    assert spans, f"no spans from {scope}"
    payload = encode_spans(spans).SerializeToString()
    decoded = decode_request(payload)
    assert len(decoded.spans) == len(spans) and not decoded.problems
    pairs = [(s, c) for s, c in ((s, normalize_call(s)) for s in decoded.spans) if c is not None]
    calls = [c for _, c in pairs]
    for span, call in pairs:
        catalog.enrich(span, call)
        assert call.service == "chat-api" and call.team == "search" and call.environment == "prod"
    return calls


def _openai_round(port: int) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass
    client.close()


def _check_openai(
    calls: list[LLMCall], convention: str, expected_costs: list[Decimal], cache: list[int], reasoning: list[int]
) -> None:
    assert len(calls) == 2
    for call, cost, cached, reasoned in zip(calls, expected_costs, cache, reasoning, strict=True):
        assert call.convention == convention
        assert call.provider == "openai"
        assert call.response_model == OPENAI_MODEL and call.model == OPENAI_MODEL
        assert (call.input_tokens, call.output_tokens) == (1200, 300)
        assert (call.cache_read_tokens, call.reasoning_tokens) == (cached, reasoned)
        assert call.cost == cost and call.pricing_entry == "base:openai/gpt-4o"


def test_otel_contrib_openai_v2(server_port: int, tracing, catalog: Pricer) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    provider, exporter = tracing
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        _openai_round(server_port)
    finally:
        instrumentor.uninstrument()
    calls = _calls(exporter, "opentelemetry.instrumentation.openai_v2", catalog)
    # This instrumentation records no cache or reasoning details: all input billed at the input price.
    _check_openai(calls, "otel_genai", [GPT4O_NO_CACHE_INFO] * 2, [0, 0], [0, 0])
    assert calls[0].finish_reason == "stop"


def test_openinference_openai(server_port: int, tracing, catalog: Pricer) -> None:
    from openinference.instrumentation.openai import OpenAIInstrumentor

    provider, exporter = tracing
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        _openai_round(server_port)
    finally:
        instrumentor.uninstrument()
    calls = _calls(exporter, "openinference.instrumentation.openai", catalog)
    _check_openai(calls, "openinference", [GPT4O_FULL] * 2, [1000, 1000], [50, 50])
    assert all(c.finish_reason == "stop" for c in calls)


def test_openllmetry_openai(server_port: int, tracing, catalog: Pricer) -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    provider, exporter = tracing
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        _openai_round(server_port)
    finally:
        instrumentor.uninstrument()
    calls = _calls(exporter, "opentelemetry.instrumentation.openai.v1", catalog)
    # The streamed span carries the cache read but not the reasoning count (billed as output either way).
    _check_openai(calls, "openllmetry", [GPT4O_FULL] * 2, [1000, 1000], [50, 0])


@pytest.mark.parametrize(
    ("module", "scope", "convention"),
    [
        ("opentelemetry.instrumentation.anthropic", "opentelemetry.instrumentation.anthropic", "openllmetry"),
        ("openinference.instrumentation.anthropic", "openinference.instrumentation.anthropic", "openinference"),
    ],
)
def test_anthropic_cache_writes(
    server_port: int, tracing, catalog: Pricer, module: str, scope: str, convention: str
) -> None:
    import importlib

    provider, exporter = tracing
    instrumentor = importlib.import_module(module).AnthropicInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{server_port}", api_key="test", max_retries=0)
        client.messages.create(model=ANTHROPIC_MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
        client.close()
    finally:
        instrumentor.uninstrument()
    [call] = _calls(exporter, scope, catalog)
    assert call.convention == convention and call.provider == "anthropic"
    # OTel semantics: input includes cache reads and writes (50 + 2000 + 3000).
    assert (call.input_tokens, call.output_tokens) == (5050, 700)
    assert (call.cache_read_tokens, call.cache_write_tokens) == (3000, 2000)
    assert call.cost == SONNET and call.pricing_entry == "base:anthropic/claude-sonnet-4-0"
