"""What one Kafka transaction per OTLP request would cost the receiver, against today's idempotent producer.

Why: issue 14 section 5 asks whether transactions should make a multi-record
request atomic. This measures, on the embedded Tansu broker, the latency of one
request (produce N records and wait for the acknowledgement) both ways, and the
rate of a sequence of requests (a transactional producer runs one transaction
at a time; the idempotent producer pipelines).

    .venv/bin/python benchmarks/bench_kafka_transactions.py [--requests 200] [--record-bytes 180000]
        [--records-per-request 1] [--output benchmarks/results/kafka-transactions-<time>.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.config import KafkaSettings  # noqa: E402
from llmops.broker import EmbeddedBroker  # noqa: E402
from llmops.topics import ensure_topics  # noqa: E402

__all__ = ["main"]


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1e3, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1e3, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--record-bytes", type=int, default=180_000)
    parser.add_argument("--records-per-request", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    value = b"x" * args.record_bytes
    n = args.records_per_request
    with EmbeddedBroker() as broker:
        topic = "txn_bench_" + uuid.uuid4().hex[:6]
        ensure_topics(
            broker.bootstrap, KafkaSettings(topic=topic, dead_letter_topic=topic + "_dlq", drift_topic=topic + "_drift")
        )
        common = {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        idempotent = Producer(common)
        transactional = Producer({**common, "transactional.id": f"bench-{uuid.uuid4().hex}"})
        started = time.perf_counter()
        transactional.init_transactions(30)
        init_s = time.perf_counter() - started

        def one_idempotent() -> None:
            for _ in range(n):
                idempotent.produce(topic, value=value)
            assert idempotent.flush(30) == 0

        def one_transaction() -> None:
            transactional.begin_transaction()
            for _ in range(n):
                transactional.produce(topic, value=value)
            transactional.commit_transaction(30)

        latency: dict[str, list[float]] = {"idempotent": [], "transaction": []}
        for _ in range(args.requests):  # interleaved, so both see the same broker state
            for name, request in (("idempotent", one_idempotent), ("transaction", one_transaction)):
                started = time.perf_counter()
                request()
                latency[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(args.requests):
            for _ in range(n):
                idempotent.produce(topic, value=value)
            idempotent.poll(0)
        assert idempotent.flush(60) == 0
        pipelined_s = time.perf_counter() - started
    report = {
        "benchmark": "kafka-transactions",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "init_transactions_ms": round(init_s * 1e3, 1),
        "per_request": {name: _ms(values) for name, values in latency.items()},
        "requests_per_s": {
            "idempotent_pipelined": round(args.requests / pipelined_s),
            "idempotent_one_at_a_time": round(args.requests / sum(latency["idempotent"])),
            "transaction_one_at_a_time": round(args.requests / sum(latency["transaction"])),
        },
    }
    print(json.dumps(report, indent=2))
    output = (
        args.output or ROOT / "benchmarks" / "results" / f"kafka-transactions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    output.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
