"""Spans/s end to end and CPU per process on three front-door x broker pairs, same payload, one run.

Why: the embedded default (built-in receiver + Tansu) is what every other benchmark measures; production runs
the OpenTelemetry Collector and Apache Kafka. This puts the three side by side, each as a ratio to (a):

(a) built-in receiver (`llmops receive`) + Tansu          (bench_pipeline.py's live stack, unchanged)
(b) built-in receiver + Apache Kafka (one KRaft node from the Maven Central jars, tests/kafka_cluster.py)
(c) the Collector built from upstream (tests/otelcol_build.py) with collector/otelcol.yaml + Apache Kafka

Each variant: one `llmops worker` (chDB), the same request bodies (bench_pipeline.capture_loadgen +
build_payloads), replayed by --senders concurrent HTTP senders to POST /v1/traces after a warm-up; the clock stops
when otel_traces holds every span (bench_pipeline.run_live: CPU seconds per process from /proc).
Needs Go (the collector), a JDK and Maven (Kafka); both are built/fetched and cached on first use.

    .venv/bin/python benchmarks/bench_production_path.py [--spans 200000] [--senders 8] [--partitions 4]
        [--output benchmarks/results/production-path-<time>.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pipeline import LiveStack, build_payloads, capture_loadgen, run_live, span_total  # noqa: E402
from collector.config import KafkaSettings  # noqa: E402
from llmops.stack import wait_for_line  # noqa: E402
from llmops.store import endpoint_alive  # noqa: E402
from llmops.topics import ensure_topics  # noqa: E402
from tests.child_process import stop_process  # noqa: E402
from tests.kafka_cluster import KafkaCluster  # noqa: E402
from tests.otelcol_process import Collector  # noqa: E402

__all__ = ["main"]


@dataclass
class KafkaLiveStack(LiveStack):
    """bench_pipeline's LiveStack on one Apache Kafka node; with `collector`, the Collector replaces
    `llmops receive`."""

    use_collector: bool = False
    cluster: KafkaCluster | None = None
    collector: Collector | None = None

    broker_kind = "kafka"

    def bootstrap(self) -> str:
        assert self.cluster is not None
        return self.cluster.bootstrap

    def start(self) -> None:
        self.cluster = KafkaCluster(1).start()
        ensure_topics(self.cluster.bootstrap, KafkaSettings(partitions=self.partitions))
        self.worker = self._spawn("worker")
        deadline = time.monotonic() + 120
        while not endpoint_alive("127.0.0.1", self.sql_port):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start (exit code {self.worker.poll()})")
            time.sleep(0.1)
        if self.use_collector:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.collector = Collector(
                self.cluster.bootstrap, log=self.data_dir / "otelcol.log", http_port=self.http_port
            ).start()
        else:
            self.receiver = self._spawn("receive")
            wait_for_line(self.receiver, "receiver ready", 60)

    def pids(self) -> dict[str, int]:
        assert self.worker is not None and self.cluster is not None and self.cluster.nodes[0].process is not None
        front = self.collector.process if self.collector is not None else self.receiver
        assert front is not None
        return {"worker": self.worker.pid, "receiver": front.pid, "broker": self.cluster.nodes[0].process.pid}

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        stop_process(self.receiver)
        stop_process(self.worker)
        if self.cluster is not None:
            self.cluster.stop()


VARIANTS = {
    "a_receiver_tansu": "built-in receiver + Tansu",
    "b_receiver_kafka": "built-in receiver + Apache Kafka",
    "c_collector_kafka": "OTel Collector + Apache Kafka",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--base-spans", type=int, default=30_000)
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-max-records", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    captured = capture_loadgen(args.base_spans, args.seed)
    bodies, spans = build_payloads(captured, args.spans, args.spans_per_request)
    warmup, warmup_spans = build_payloads(captured, args.spans_per_request, args.spans_per_request, first_copy=0xFFFF)
    spans_per_body = [span_total([b]) for b in bodies]
    llm_spans = 0  # run_live waits for llm_calls too; counted by the worker's own rule in bench_pipeline
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        llm_spans += sum(
            1
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
            if any(kv.key == "gen_ai.operation.name" for kv in s.attributes)
        )
    say(f"payload: {spans:,} spans in {len(bodies):,} requests")
    work = Path(tempfile.mkdtemp(prefix="llmops-bench-prod-"))
    results: dict[str, Any] = {}
    try:
        for name, label in VARIANTS.items():
            common = (work / name, args.partitions, args.batch_max_records, {"LLMOPS_DRIFT__ENABLED": "true"})
            stack = (
                LiveStack(*common)
                if name.startswith("a_")
                else KafkaLiveStack(*common, use_collector=name.startswith("c_"))
            )
            say(f"--- ({name[0]}) {label}")
            try:
                stack.start()
                live = asyncio.run(
                    run_live(stack, bodies, spans_per_body, warmup[0], warmup_spans, llm_spans, args.senders, say)
                )
            finally:
                stack.stop()
            live.pop("timeline", None)
            results[name] = live
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["a_receiver_tansu"]
    summary = {}
    for name, live in results.items():
        cpu = {k: round(v, 2) for k, v in live["cpu_s"].items()}
        summary[name] = {
            "label": VARIANTS[name],
            "e2e_spans_per_s": round(live["e2e_spans_per_s"]),
            "ratio_to_a": round(live["e2e_spans_per_s"] / base["e2e_spans_per_s"], 3),
            "cpu_s": cpu,
            "cpu_us_per_span": {k: round(1e6 * v / spans, 2) for k, v in live["cpu_s"].items()},
            "cpu_ratio_to_a": {
                k: round(v / base["cpu_s"][k], 3) if base["cpu_s"].get(k) else None for k, v in live["cpu_s"].items()
            },
            "peak_rss_mib": {k: round(v) for k, v in live["peak_rss_mib"].items()},
        }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_after": os.getloadavg(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "payload": {"spans": spans, "requests": len(bodies), "llm_spans": llm_spans},
        "summary": summary,
        "live": results,
    }
    output = args.output or ROOT / "benchmarks" / "results" / f"production-path-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
