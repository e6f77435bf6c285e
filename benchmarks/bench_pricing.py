"""The price resolver alone: calls/s cold (every call resolved through the layers) vs cached.

Cold = the cache is emptied before every call, so each call walks the user/project catalog and
the base database (genai-prices' per-provider model scan). Cached = the worker's steady state:
one dict lookup per call plus the integer cost arithmetic. The call mix is real model ids of
OpenAI, Anthropic, Bedrock (regional and global profiles), Vertex, Azure data zones, Mistral,
Groq and xAI, some unpriced.

    .venv/bin/python benchmarks/bench_pricing.py [--calls 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from processors.core.pricer import Pricer, PricerSources
from processors.core.records import LLMCall

CALLS = [
    ("openai", "gpt-4o-2024-08-06", {}),
    ("openai", "gpt-5", {"openai.response.service_tier": "priority"}),
    ("openai", "gpt-5-mini", {"openai.response.service_tier": "flex"}),
    ("anthropic", "claude-sonnet-4-5-20250929", {}),
    ("anthropic", "claude-haiku-4-5-20251001", {}),
    ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", {}),
    ("aws.bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", {}),
    (
        "aws.bedrock",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        {"server.address": "bedrock-runtime.eu-west-1.amazonaws.com"},
    ),
    ("gcp.vertex_ai", "claude-sonnet-4-5@20250929", {"server.address": "us-east5-aiplatform.googleapis.com"}),
    ("gcp.gemini", "gemini-2.5-pro", {}),
    ("azure.ai.openai", "azure/eu/gpt-4o", {}),
    ("mistral_ai", "mistral-medium-latest", {}),
    ("groq", "llama-3.3-70b-versatile", {}),
    ("x_ai", "grok-4-0709", {}),
    ("openai", "ft:gpt-4o-mini:acme::x1", {}),
]


def make_calls(n: int, seed: int = 7) -> list[tuple[LLMCall, dict]]:
    rng = random.Random(seed)
    out = []
    day0 = 1_763_000_000 * 10**9
    for i in range(n):
        provider, model, attrs = rng.choice(CALLS)
        call = LLMCall(
            ts_ns=day0 + rng.randrange(3 * 86_400) * 10**9,
            trace_id="t",
            span_id=str(i),
            provider=provider,
            request_model=model,
            response_model=model,
            input_tokens=rng.randint(100, 20_000),
            output_tokens=rng.randint(10, 2_000),
            cache_read_tokens=rng.randint(0, 90),
        )
        out.append((call, attrs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--cold-calls", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pricer = Pricer.load(PricerSources())
    calls = make_calls(args.calls)
    cold = calls[: args.cold_calls]
    best_cold = best_cached = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for call, attrs in cold:
            pricer.clear_cache()
            pricer.price(call, attrs, None)
        best_cold = min(best_cold, time.process_time() - start)
        pricer.clear_cache()
        start = time.process_time()
        for call, attrs in calls:
            pricer.price(call, attrs, None)
        best_cached = min(best_cached, time.process_time() - start)
    result = {
        "cold_calls_per_s": round(len(cold) / best_cold),
        "cached_calls_per_s": round(len(calls) / best_cached),
        "cold_us_per_call": round(1e6 * best_cold / len(cold), 2),
        "cached_us_per_call": round(1e6 * best_cached / len(calls), 3),
        "distinct_keys": pricer.cached,
        "base": pricer.version,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
