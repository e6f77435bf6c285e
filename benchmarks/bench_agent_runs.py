"""Agent-run assembly (issue 19): spans/s on one core, memory per open run, and the commit-offset query.

Measures the pure core (`processors/core/agents/runs.py`, `wire.py`) that the agent-run stage runs.
Synthetic traces shaped like an agent run: a root agent, one nested agent, six
LLM calls with tokens and cost, eight tool calls over three tools (every tenth run loops: one tool six
times with the same arguments), spans one second apart. Runs start every 50 ms of event time and their
spans arrive in end-time order, grouped into records of 64 spans over 4 sources (a trace's spans on one
source, as a topic keyed by trace id gives).

    .venv/bin/python benchmarks/bench_agent_runs.py [--runs 20000] [--open-runs 2000] [--output FILE]

Printed and written as JSON: assembly rate (CPU seconds of this thread for `add` on every record and
`close` after every 16 records), the runs and findings it closed, traced memory (tracemalloc) per open
run and per span with `--open-runs` runs open, and the CPU time of one `committable` call with them open;
the same memory for runs of one LLM call (a plain request: most traces at high volume); and the record
format's cost: encoding in the worker and decoding in the stage, per span.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run as scripts

from processors.core.agents.runaway import RunawayRules
from processors.core.agents.runs import RunAssembler, RunSettings
from processors.core.agents.spans import RunSpan, args_digest
from processors.core.agents.wire import decode_run_spans, encode_run_spans

T0 = 1_764_000_000 * 10**9
S = 10**9
SOURCES = 4
RECORD_SPANS = 64


def run_spans(n: int, rng: random.Random) -> list[RunSpan]:
    trace = f"{n:032x}"
    start = T0 + n * 50_000_000
    spans = []
    at = start
    for i in range(6):
        cost = Decimal(rng.randrange(1, 10**7)).scaleb(-9)
        spans.append(
            RunSpan(
                trace,
                f"{n:08x}l{i}",
                f"{n:08x}a1",
                "llm",
                "bot",
                "gpt-4o",
                at,
                at + S // 2,
                False,
                input_tokens=rng.randrange(100, 4000),
                output_tokens=rng.randrange(10, 800),
                cost=cost,
            )
        )
        at += S
    looping = n % 10 == 0
    for i in range(8):
        tool = "search" if looping and i < 6 else rng.choice(("search", "fetch", "calc"))
        args = '{"q": "same"}' if looping and i < 6 else json.dumps({"q": rng.random()})
        spans.append(
            RunSpan(
                trace,
                f"{n:08x}t{i}",
                f"{n:08x}a1",
                "tool",
                "bot",
                tool,
                at,
                at + S // 4,
                False,
                tool_args=args_digest(args),
            )
        )
        at += S
    spans.append(RunSpan(trace, f"{n:08x}a1", f"{n:08x}a0", "agent", "bot", "researcher", start, at, False))
    spans.append(RunSpan(trace, f"{n:08x}a0", "", "agent", "bot", "planner", start, at + S, False))
    return spans


def records(runs: int, seed: int) -> list[tuple[str, int, list[RunSpan]]]:
    """(source, offset, spans) in arrival order: spans by end time, a trace's spans on one source."""
    rng = random.Random(seed)
    spans = sorted((s for n in range(runs) for s in run_spans(n, rng)), key=lambda s: s.end_ns)
    by_source: dict[str, list[RunSpan]] = {f"agent_spans/{p}": [] for p in range(SOURCES)}
    out = []
    offsets = dict.fromkeys(by_source, 0)
    for span in spans:
        source = f"agent_spans/{hash(span.trace_id) % SOURCES}"
        pending = by_source[source]
        pending.append(span)
        if len(pending) == RECORD_SPANS:
            out.append((source, offsets[source], pending))
            offsets[source] += 1
            by_source[source] = []
    out += [(source, offsets[source], pending) for source, pending in by_source.items() if pending]
    return out


def assemble(batch: list[tuple[str, int, list[RunSpan]]]) -> dict[str, float]:
    assembler = RunAssembler(RunSettings(gap_s=30, lateness_s=5, rules=RunawayRules(loop_repeats=5)))
    closed_runs = findings = 0
    started = time.thread_time()
    for i, (source, offset, spans) in enumerate(batch):
        now = spans[-1].end_ns
        closed = assembler.add(source, offset, spans, now)
        findings += len(closed.findings)
        if i % 16 == 15:
            closed = assembler.close(now)
            closed_runs += len(closed.runs)
            findings += len(closed.findings)
    end = max(s.end_ns for _, _, spans in batch for s in spans) + 3600 * S
    closed = assembler.close(end)
    seconds = time.thread_time() - started
    closed_runs += len(closed.runs)
    findings += len(closed.findings)
    total = sum(len(record) for _, _, record in batch)
    return {
        "spans": total,
        "cpu_s": seconds,
        "spans_per_s": total / seconds,
        "runs_closed": closed_runs,
        "findings": findings,
        "late_spans": assembler.late_spans,
        "evicted_runs": assembler.evicted_runs,
    }


def open_run_memory(open_runs: int, seed: int) -> dict[str, float]:
    """Traced bytes the assembler holds for `open_runs` open runs, their spans included (built inside the
    traced region and referenced by nothing else, as spans decoded from the topic would be)."""
    rng = random.Random(seed)
    assembler = RunAssembler(RunSettings(gap_s=10**6, max_open_runs=open_runs + 1))
    total = 0
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(open_runs):
        spans = run_spans(n, rng)
        total += len(spans)
        assembler.add(f"agent_spans/{n % SOURCES}", n, spans, spans[-1].end_ns)
    del spans
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    started = time.thread_time()
    for _ in range(100):
        assembler.committable("agent_spans/0", open_runs)
    per_query = (time.thread_time() - started) / 100
    return {
        "open_runs": open_runs,
        "bytes_per_open_run": held / open_runs,
        "bytes_per_span": held / total,
        "committable_ms": per_query * 1000,
    }


def single_call_memory(open_runs: int) -> dict[str, float]:
    """Traced bytes per open run of one LLM call (trace ids and span ids as the decoder gives them)."""
    assembler = RunAssembler(RunSettings(calls_gap_s=10**6, max_open_runs=open_runs + 1))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(open_runs):
        span = RunSpan(f"{n:032x}", f"{n:016x}", f"{n + 1:016x}", "llm", "checkout", "gpt-4o-2024-08-06",
                       T0 + n * S, T0 + n * S + S, False, user_id=f"user-{n % 5000}",
                       input_tokens=1200, output_tokens=300, cost=Decimal("0.0044"))  # fmt: skip
        assembler.add(f"agent_spans/{n % SOURCES}", n, [span], span.end_ns)
    del span
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"open_runs": open_runs, "bytes_per_open_run": held / open_runs}


def wire_cost(batch: list[tuple[str, int, list[RunSpan]]]) -> dict[str, float]:
    """CPU per span to encode every span into agent-span records (4 partitions) and to decode them."""
    spans = [span for _, _, record in batch for span in record]
    started = time.thread_time()
    records = encode_run_spans(spans, SOURCES)
    encoded = time.thread_time() - started
    started = time.thread_time()
    decoded = sum(len(decode_run_spans(value)) for _, value in records)
    decoding = time.thread_time() - started
    assert decoded == len(spans)
    return {
        "spans": len(spans),
        "bytes_per_span": sum(len(value) for _, value in records) / len(spans),
        "encode_us_per_span": encoded / len(spans) * 1e6,
        "decode_us_per_span": decoding / len(spans) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20_000, help="agent runs to assemble")
    parser.add_argument("--open-runs", type=int, default=2_000, help="runs held open for the memory figure")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args()
    gc.set_threshold(100_000, 50, 100)  # the worker's thresholds (processors/worker.py), where the stage runs
    print(f"building {args.runs:,} runs ...", file=sys.stderr)
    batch = records(args.runs, args.seed)
    print("assembling ...", file=sys.stderr)
    a, m = assemble(batch), open_run_memory(args.open_runs, args.seed)
    single, w = single_call_memory(10 * args.open_runs), wire_cost(batch)
    result = {
        "assembly": a,
        "memory": m,
        "single_call_memory": single,
        "wire": w,
        "command": " ".join(sys.argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
    }
    print(
        f"assembly: {a['spans']:,} spans in {a['cpu_s']:.2f} s CPU = {a['spans_per_s']:,.0f} spans/s on one core; "
        f"{a['runs_closed']:,} runs, {a['findings']:,} findings, {a['late_spans']} late, {a['evicted_runs']} evicted"
    )
    print(
        f"memory: {m['bytes_per_open_run']:,.0f} bytes per open run ({m['bytes_per_span']:,.0f} per span) "
        f"with {m['open_runs']:,} open; committable {m['committable_ms']:.3f} ms"
    )
    print(
        f"runs of one LLM call: {single['bytes_per_open_run']:,.0f} bytes per open run "
        f"with {single['open_runs']:,} open"
    )
    print(
        f"records: {w['bytes_per_span']:.0f} bytes per span; encode {w['encode_us_per_span']:.2f} us, "
        f"decode {w['decode_us_per_span']:.2f} us per span"
    )
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
