"""Span attribute decoding: KeyValueCache over wire bytes against decoding parsed KeyValues.

The worker decodes only LLM spans' attributes, through a cache keyed by each KeyValue's
encoding (processors/otlp_values.KeyValueCache). What it is worth depends on how often
attributes repeat, so two payloads are measured: spans from `llmops loadgen` (OTel SDK
exporter) and spans whose response id and token counts never repeat. The cache starts
empty in every timed pass. Prints µs per attribute and the hit rate.

    .venv/bin/python benchmarks/bench_attributes.py [--spans 60000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run as scripts

from benchmarks.bench_pipeline import capture_loadgen
from processors.core.decode import parse_record, parse_request
from processors.core.otlp_values import KeyValueCache, attributes_dict
from processors.core.pipeline import may_be_llm_call


def unique_values_payload(spans: int) -> list[bytes]:
    """LLM spans whose response id and token counts differ from span to span."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(spans):
        span = scope.spans.add(
            trace_id=(n + 1).to_bytes(16, "big"), span_id=(n + 1).to_bytes(8, "big"), start_time_unix_nano=1
        )
        for key, value in (
            ("gen_ai.operation.name", AnyValue(string_value="chat")),
            ("gen_ai.response.id", AnyValue(string_value=f"chatcmpl-{uuid.uuid4().hex[:24]}")),
            ("gen_ai.usage.input_tokens", AnyValue(int_value=1000 + n)),
            ("gen_ai.usage.output_tokens", AnyValue(int_value=50 + n)),
        ):
            span.attributes.add(key=key).value.CopyFrom(value)
    return [request.SerializeToString()]


def best_of(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure(name: str, bodies: list[bytes], repeat: int) -> None:
    full = [
        span
        for body in bodies
        for rs in parse_request(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    raw = [
        span
        for body in bodies
        for rs in parse_record(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    keep = [i for i, span in enumerate(raw) if may_be_llm_call(span)]
    full_attrs = [full[i].attributes for i in keep]
    raw_attrs = [list(raw[i].attributes) for i in keep]
    attributes = sum(len(a) for a in raw_attrs)
    caches: list[KeyValueCache] = []

    def cached() -> None:
        cache = KeyValueCache()
        caches.append(cache)
        for encoded in raw_attrs:
            cache.attributes(encoded)

    before = best_of(repeat, lambda: [attributes_dict(a) for a in full_attrs])
    after = best_of(repeat, cached)
    distinct = len({b for a in raw_attrs for b in a})
    print(
        f"{name}: {len(keep):,} LLM spans, {attributes:,} attributes, {distinct:,} distinct encodings "
        f"(hit rate at most {1 - distinct / attributes:.0%}; cache holds {len(caches[-1]):,})"
    )
    print(f"  attributes_dict on parsed KeyValues  {1e6 * before / attributes:6.2f} µs/attribute")
    print(f"  KeyValueCache on wire bytes          {1e6 * after / attributes:6.2f} µs/attribute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=60_000, help="spans to capture from loadgen (default 60000)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed passes per measurement; the best counts (default 5)"
    )
    args = parser.parse_args()
    print(f"capturing ~{args.spans:,} spans from llmops.loadgen (OTel SDK) ...", flush=True)
    measure("loadgen", capture_loadgen(args.spans, 1), args.repeat)
    print("building spans with unique response ids and token counts ...", flush=True)
    measure("unique values", unique_values_payload(20_000), args.repeat)


if __name__ == "__main__":
    main()
