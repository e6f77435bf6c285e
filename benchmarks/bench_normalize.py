"""Normalisation + cost rate on one core (protobuf parsing excluded).

Realistic decoded spans: OTel GenAI, OpenLLMetry and OpenInference LLM spans with
the attributes those instrumentations write, plus 40% non-LLM spans (HTTP, DB,
tool/agent spans). Prints LLM calls/s and spans/s over the best of several runs.

    .venv/bin/python benchmarks/bench_normalize.py [--spans 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from processors.core.normalize import NormalizeOptions, normalize_call
from processors.core.pricer import Pricer, PricerSources
from processors.core.records import SpanView

MODELS = [
    ("openai", "gpt-4o", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4-20250514"),
    ("gcp.gemini", "gemini-2.5-pro", "gemini-2.5-pro"),
    ("aws.bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0", "us.anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("openai", "ft:gpt-4o-mini:acme::x1", "ft:gpt-4o-mini:acme::x1"),
]


def make_spans(n: int, seed: int = 7) -> list[SpanView]:
    rng = random.Random(seed)
    resources = [
        {
            "service.name": f"svc-{i}",
            "deployment.environment.name": "prod",
            "team": f"team-{i % 3}",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.language": "python",
            "host.name": "h",
        }
        for i in range(8)
    ]
    spans = []
    for i in range(n):
        provider, req, resp = rng.choice(MODELS)
        inp, out, cached = rng.randint(100, 20000), rng.randint(10, 2000), rng.randint(0, 90)
        kind = rng.random()
        attrs: dict[str, Any]
        if kind < 0.4:
            attrs = rng.choice(
                [
                    {
                        "http.request.method": "POST",
                        "url.full": "https://api/x",
                        "http.response.status_code": 200,
                        "server.address": "api",
                        "server.port": 443,
                        "network.protocol.version": "1.1",
                    },
                    {
                        "db.system.name": "postgresql",
                        "db.query.text": "SELECT 1",
                        "db.namespace": "app",
                        "server.address": "db",
                    },
                    {"openinference.span.kind": "CHAIN", "input.value": "q", "output.value": "a"},
                    {"traceloop.span.kind": "workflow", "traceloop.entity.name": "wf", "traceloop.workflow.name": "wf"},
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "search",
                        "gen_ai.tool.call.id": "c1",
                    },
                ]
            )
        elif kind < 0.6:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": req,
                "gen_ai.response.model": resp,
                "gen_ai.response.id": "chatcmpl-1",
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.usage.input_tokens": inp,
                "gen_ai.usage.output_tokens": out,
                "gen_ai.usage.cache_read.input_tokens": cached,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.max_tokens": 1024,
                "server.address": "api.openai.com",
            }
        elif kind < 0.8:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": req,
                "gen_ai.is_streaming": True,
                "gen_ai.openai.api_base": "https://api.openai.com/v1/",
                "gen_ai.response.model": resp,
                "gen_ai.response.id": "chatcmpl-2",
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.usage.total_tokens": inp + out,
                "gen_ai.usage.input_tokens": inp,
                "gen_ai.usage.output_tokens": out,
                "gen_ai.usage.cache_read.input_tokens": cached,
                "gen_ai.usage.reasoning_tokens": 0,
                "traceloop.workflow.name": "support",
                "traceloop.entity.path": "support.answer",
            }
        else:
            attrs = {
                "openinference.span.kind": "LLM",
                "llm.provider": provider,
                "llm.system": provider,
                "llm.model_name": resp,
                "llm.invocation_parameters": '{"model": "x"}',
                "input.mime_type": "application/json",
                "llm.token_count.prompt": inp,
                "llm.token_count.completion": out,
                "llm.token_count.total": inp + out,
                "llm.token_count.prompt_details.cache_read": cached,
                "llm.finish_reason": "stop",
                "session.id": "s1",
                "llm.prompt_template.version": "v3",
            }
        start = 1_764_000_000_000_000_000 + i * 1_000_000
        spans.append(
            SpanView(
                trace_id="0af7651916cd43dd8448eb211c80319c",
                span_id=f"{i:016x}",
                parent_span_id="",
                name="span",
                kind=3,
                start_ns=start,
                end_ns=start + 800_000_000,
                status_code=0,
                status_message="",
                attributes=attrs,
                resource=resources[i % 8],
            )
        )
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spans = make_spans(args.spans)
    pricer = Pricer.load(PricerSources())
    options = NormalizeOptions()
    best = float("inf")
    best_cpu = float("inf")
    calls = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        start_cpu = time.process_time()
        calls = 0
        enrich = pricer.enrich
        for span in spans:
            call = normalize_call(span, options)
            if call is not None:
                enrich(span, call)
                calls += 1
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    print(f"spans={len(spans)} llm_calls={calls} best_of={args.repeat} wall={best:.3f}s cpu={best_cpu:.3f}s")
    print(
        f"normalize+cost (CPU time): {calls / best_cpu:,.0f} calls/s  "
        f"({len(spans) / best_cpu:,.0f} spans/s incl. 40% non-LLM)"
    )
    print(f"normalize+cost (wall):     {calls / best:,.0f} calls/s")


if __name__ == "__main__":
    main()
