"""What the worst span costs (issue 14, section 2): CPU per span for each kind of hostile value, next to a clean one.

The property test (`tests/test_span_bounds.py`) checks the structural bound: no number parser sees more than 40
characters, everything else is linear in the span's bytes. This measures it. One span per Kafka record, with a
clean GenAI call's attributes plus one hostile value of up to ~900 KB (a record holds at most ~1 MB), through:

- the worker's Python step (`prepare_records`: parse, check, decode, normalise, TTFT, price, rows; the drift
  sender on, as `llmops up` runs it), and
- the drift stage's signal extraction (`extract_signals`) on the same attributes, which runs for sampled calls.

    .venv/bin/python benchmarks/bench_span_bounds.py [--repeat 5] [--output FILE]

Per case: CPU µs per span (fastest of --repeat passes over 20 records), the same per KB of the span on the
wire, and the drift extraction's µs; the calls stored (a refused value stores none: an ingest_errors row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run as scripts

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmops.config import Settings
from processors.core.drift.signals import extract_signals
from processors.core.drift.wire import DriftSender
from processors.core.latency import TTFT_ATTRIBUTE
from processors.core.pipeline import SourceRecord
from processors.core.prepare import prepare_records
from processors.stages import build_call_stages
from tests.otlp_values_build import set_any_value

START = 1_764_000_000_000_000_000
BIG = 900_000
GOOD: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 20,
    "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]),
}
# name -> (attributes replaced or added, span start time)
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "clean": ({}, START),
    "token count '1e1000000'": ({"gen_ai.usage.input_tokens": "1e1000000"}, START),
    "token count of 900,000 digits": ({"gen_ai.usage.input_tokens": "7" * BIG}, START),
    "token count 2**63-1": ({"gen_ai.usage.input_tokens": 2**63 - 1}, START),
    "token count NaN": ({"gen_ai.usage.input_tokens": float("nan")}, START),
    "start time 2**63-1": ({}, 2**63 - 1),
    "model name of 900 KB": ({"gen_ai.request.model": "m" * BIG}, START),
    "TTFT '1e1000000'": ({TTFT_ATTRIBUTE: "1e1000000"}, START),
    "answer JSON of 900 KB": ({"gen_ai.output.messages": json.dumps(["x" * 1000] * 880)}, START),
    "answer JSON nested 300,000 deep": ({"gen_ai.output.messages": "[" * 300_000 + "]" * 300_000}, START),
    "answer text of 900 KB": ({"output.value": "word " * (BIG // 5)}, START),
    "embedding of 100,000 floats": ({"embedding.embeddings.0.embedding.vector": [0.5] * 100_000}, START),
    "20,000 indexed answer attributes": (
        {f"llm.output_messages.{i}.message.content": "x" for i in range(20_000)},
        START,
    ),
}


def record(overrides: dict[str, Any], start_ns: int) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "bench-bounds"
    span = rs.scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="chat", start_time_unix_nano=start_ns,
        end_time_unix_nano=START + 10**9,
    )  # fmt: skip
    for key, value in {**GOOD, **overrides}.items():
        set_any_value(span.attributes.add(key=key).value, value)
    return request.SerializeToString()


def measure(repeat: int) -> dict[str, dict[str, float]]:
    settings = Settings()
    stages = build_call_stages(settings)
    warm = [SourceRecord("otlp_spans", 0, i, record({}, START), "bench/0") for i in range(20)]
    prepare_records(warm, {}, stages, DriftSender(settings.drift.window_s, settings.drift.reservoir_size, 8))
    extract_signals(GOOD)  # caches (pricing resolution, imports) warm before the first case
    out = {}
    for name, (overrides, start_ns) in CASES.items():
        bodies = [record(overrides, start_ns) for _ in range(20)]
        records = [SourceRecord("otlp_spans", 0, i, body, "bench/0") for i, body in enumerate(bodies)]
        best = float("inf")
        for _ in range(repeat):
            sender = DriftSender(settings.drift.window_s, settings.drift.reservoir_size, 8)
            started = time.thread_time()
            poison, batch = prepare_records(records, {}, stages, sender)
            best = min(best, time.thread_time() - started)
        attrs = {**GOOD, **overrides}
        best_drift = float("inf")
        for _ in range(repeat):
            started = time.thread_time()
            extract_signals(attrs)
            best_drift = min(best_drift, time.thread_time() - started)
        out[name] = {
            "span_bytes": len(bodies[0]),
            "worker_us_per_span": best / len(records) * 1e6,
            "worker_us_per_kb": best / len(records) * 1e6 / (len(bodies[0]) / 1000),
            "drift_extract_us": best_drift * 1e6,
            "calls": batch.calls,
            "poison_records": len(poison),
        }
        row = out[name]
        print(f"{name:<36} {row['span_bytes']:>9,} B  worker {row['worker_us_per_span']:>8,.0f} µs/span "
              f"({row['worker_us_per_kb']:>5,.1f} µs/KB)  drift {row['drift_extract_us']:>7,.0f} µs  "
              f"calls {batch.calls}", file=sys.stderr)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="passes per case; the fastest counts")
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    result = {"command": " ".join(sys.argv), "cases": measure(args.repeat)}
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
