"""The worker's CPU per record from Kafka bytes to rows, A/B between two trees, on loadgen traffic.

Captures request bodies from `llmops loadgen` once (OTel SDK exporter, regrouped into records of
`--spans-per-record` spans as in bench_pipeline.py), then runs each tree in its own process
(PYTHONPATH=tree) on the same bytes, alternating A and B for `--rounds`. A child times, in CPU
seconds of its thread, the batch handler's Python steps on batches of `processor.batch_max_records`:

- `parse`: bytes to what the record's parse gives: poison or not, span problems, the valid-span count
  and SpanViews of the spans that may be LLM calls (`parse_records`, and in a tree whose
  ParsedRecord still holds the parsed request, `decode_request` on it as `decode_parsed` ran it);
- `parse+decode`: `parse_records` then `decode_parsed` (records to LLM calls and span problems);
- `prepare`: what the batch handler runs in its thread: that, plus the rows of every table but
  otel_traces and the drift records (`prepare_records`; `parse_records` then `prepare_batch` in a
  tree without it). Drift is off (no sender), as in the replay of bench_pipeline.py.

The children collect garbage as the worker does (its gc thresholds, a collection before each pass).
The machine is shared, so the fastest pass of each tree counts; /proc/loadavg is recorded.

    .venv/bin/python benchmarks/bench_parse.py --tree before=/path/to/main --tree after=. [--output FILE]

CPU time on a shared machine moves by more than a few per cent between runs, so the same step can be
counted in instructions instead (load does not move them): save the records once, then per tree run
`prepare` on them `--passes` times after one warm pass under valgrind, minus the same with 0 passes
(`--step parse`: only `parse_records`):

    .venv/bin/python benchmarks/bench_parse.py --save-records records.pickle
    PYTHONHASHSEED=0 PYTHONPATH=<tree> valgrind --tool=cachegrind --cache-sim=no .venv/bin/python \
        benchmarks/bench_parse.py --replay records.pickle --records 16 --passes 2      # and --passes 0
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _modules() -> tuple[Any, Any, Any]:
    """decode_request, the pipeline and prepare modules of the tree on PYTHONPATH (before or after processors/core/)."""
    base = "processors.core" if importlib.util.find_spec("processors.core") is not None else "processors"
    pipeline, prepare = (importlib.import_module(f"{base}.{name}") for name in ("pipeline", "prepare"))
    return importlib.import_module(f"{base}.decode").decode_request, pipeline, prepare


def measure(bodies_file: Path, repeat: int) -> dict[str, float]:
    """In the child: best-of-`repeat` CPU seconds of each step over all records."""
    from llmops.config import Settings

    decode_request, pipeline, prepare_module = _modules()
    ParsedRecord, SourceRecord, decode_parsed, may_be_llm_call, parse_records = (
        pipeline.ParsedRecord,
        pipeline.SourceRecord,
        pipeline.decode_parsed,
        pipeline.may_be_llm_call,
        pipeline.parse_records,
    )
    from processors.stages import build_call_stages

    gc.set_threshold(100_000, 50, 100)  # as processors/worker.py sets them
    bodies: list[bytes] = pickle.loads(bodies_file.read_bytes())
    settings = Settings()
    stages = build_call_stages(settings)
    size = settings.processor.batch_max_records
    batches = [
        [
            SourceRecord("otlp_spans", 0, start + i, body, "bench/0")
            for i, body in enumerate(bodies[start : start + size])
        ]
        for start in range(0, len(bodies), size)
    ]

    def parse() -> None:
        for records in batches:
            parsed, _ = parse_records(records)
            if hasattr(ParsedRecord, "request"):  # the tree before one parse: SpanViews came from a second pass
                for item in parsed:
                    decode_request(item.request, keep=may_be_llm_call)

    def decode() -> None:
        for records in batches:
            parsed, poison = parse_records(records)
            assert not poison
            decode_parsed(parsed, stages)

    def prepare() -> None:
        for records in batches:
            if hasattr(prepare_module, "prepare_records"):
                prepare_module.prepare_records(records, {}, stages, None)
            else:
                parsed, _ = parse_records(records)
                prepare_module.prepare_batch(parsed, {}, stages, None)

    out = {}
    for name, step in (("parse", parse), ("parse+decode", decode), ("prepare", prepare)):
        step()  # warm the attribute cache and the pricing lookups, as a running worker has them
        best = float("inf")
        for _ in range(repeat):
            gc.collect()
            started = time.thread_time()
            step()
            best = min(best, time.thread_time() - started)
        out[name] = best
    return out


def replay(bodies_file: Path, records: int, passes: int, step: str = "prepare") -> None:
    """In a child under valgrind: the `prepare` step (or only `parse`: `parse_records`) on the first `records`
    records, once warm, then `passes` times."""
    from llmops.config import Settings

    _, pipeline, prepare_module = _modules()
    SourceRecord, parse_records = pipeline.SourceRecord, pipeline.parse_records
    from processors.stages import build_call_stages

    gc.set_threshold(100_000, 50, 100)  # as processors/worker.py sets them
    bodies: list[bytes] = pickle.loads(bodies_file.read_bytes())[:records]
    settings = Settings()
    stages = build_call_stages(settings)
    size = settings.processor.batch_max_records
    batches = [
        [
            SourceRecord("otlp_spans", 0, start + i, body, "bench/0")
            for i, body in enumerate(bodies[start : start + size])
        ]
        for start in range(0, len(bodies), size)
    ]

    def prepare() -> None:
        for batch in batches:
            if step == "parse":
                parse_records(batch)
            elif hasattr(prepare_module, "prepare_records"):
                prepare_module.prepare_records(batch, {}, stages, None)
            else:
                parsed, _ = parse_records(batch)
                prepare_module.prepare_batch(parsed, {}, stages, None)

    prepare()
    for _ in range(passes):
        gc.collect()
        prepare()


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _commit(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a tree to measure (give two)")
    parser.add_argument("--spans", type=int, default=30_000, help="spans in the replayed records (default 30000)")
    parser.add_argument("--spans-per-record", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="A/B alternations (default 3)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per child; the fastest counts (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--save-records", type=Path, default=None, help="capture loadgen records into this file and stop"
    )
    parser.add_argument("--replay", type=Path, default=None, help="run `prepare` on saved records (for valgrind)")
    parser.add_argument("--records", type=int, default=16, help="with --replay: records to use (default 16)")
    parser.add_argument("--passes", type=int, default=2, help="with --replay: passes after the warm one (default 2)")
    parser.add_argument(
        "--step", choices=("prepare", "parse"), default="prepare", help="with --replay: prepare (default) or parse"
    )
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args(argv)

    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.repeat)))
        return 0
    if args.replay is not None:
        replay(args.replay, args.records, args.passes, args.step)
        return 0

    trees = dict(item.split("=", 1) for item in args.tree)
    sys.path.insert(0, str(HERE))
    from bench_pipeline import build_payloads, capture_loadgen, span_total  # type: ignore[import-not-found]

    print(f"capturing ~{args.spans:,} spans from llmops.loadgen ...", file=sys.stderr, flush=True)
    bodies, spans = build_payloads(capture_loadgen(args.spans, args.seed), args.spans, args.spans_per_record)
    assert span_total(bodies) == spans
    if args.save_records is not None:
        args.save_records.write_bytes(pickle.dumps(bodies))
        print(f"{len(bodies)} records, {spans} spans -> {args.save_records}", file=sys.stderr)
        return 0
    loadavg_before = _loadavg()
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as work:
        bodies_file = Path(work) / "bodies.pickle"
        bodies_file.write_bytes(pickle.dumps(bodies))
        for _ in range(args.rounds):
            for name, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
                done = subprocess.run(
                    [
                        sys.executable,
                        str(HERE / "bench_parse.py"),
                        "--measure",
                        str(bodies_file),
                        "--repeat",
                        str(args.repeat),
                    ],
                    env=env,
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                for step, seconds in json.loads(done.stdout.splitlines()[-1]).items():
                    best[name][step] = min(best[name].get(step, float("inf")), seconds)
    result: dict[str, Any] = {
        "benchmark": "bench_parse",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": loadavg_before, "loadavg_after": _loadavg()},
        "payload": {
            "records": len(bodies),
            "spans": spans,
            "bytes": sum(len(b) for b in bodies),
            "spans_per_record": args.spans_per_record,
        },
        "rounds": args.rounds,
        "repeat": args.repeat,
        "trees": {name: {"path": str(tree), "commit": _commit(Path(tree))} for name, tree in trees.items()},
        "cpu_s": best,
        "us_per_record": {name: {k: 1e6 * v / len(bodies) for k, v in steps.items()} for name, steps in best.items()},
        "us_per_span": {name: {k: 1e6 * v / spans for k, v in steps.items()} for name, steps in best.items()},
    }
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
