"""Overload: many senders for a minute against broker + receiver + worker; does the backlog stay bounded?

Why: issue 14 section 4. Before the lag bound, 64 senders for 60 s were never
refused and left 96 % of the acknowledged spans sitting in the broker (which
grew to 4.6 GB). With `receiver.max_consumer_lag_records` the receiver answers
429 + Retry-After once the worker group is that many records behind, so the
backlog, and with it the memory broker, stays bounded.

What runs: the Tansu broker, `llmops receive` and `llmops worker` as child
processes (as `llmops up` starts them, via benchmarks/bench_pipeline.py's
LiveStack). --senders concurrent aiohttp clients replay loadgen request bodies
(the real OTel SDK's output, regrouped into --spans-per-request spans) for
--duration seconds; a refused request is retried after its Retry-After, as the
OTel SDK exporters do. Every 0.5 s the worker group's lag (records) and each
process's RSS are sampled. After the senders stop, the run waits for the lag to
reach 0 (at most --drain-timeout) and samples RSS again.

    .venv/bin/python benchmarks/bench_overload.py [--senders 64] [--duration 60] [--max-lag 500]
        [--spans-per-request 200] [--partitions 4] [--output benchmarks/results/overload-<time>.json]

--max-lag 0 turns the bound off (the behaviour before it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pipeline import LiveStack, _status_kib, build_payloads, capture_loadgen  # noqa: E402
from collector.config import KafkaSettings  # noqa: E402
from collector.lag import LagProbe  # noqa: E402

__all__ = ["main"]


async def _sender(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    spans: list[int],
    start: int,
    stop_at: float,
    outcome: Counter,
    honor_retry_after: bool,
) -> None:
    i = start
    headers = {"Content-Type": "application/x-protobuf"}
    while time.monotonic() < stop_at:
        body = bodies[i % len(bodies)]
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                outcome[str(response.status)] += 1
                if response.status == 200:
                    outcome["spans_accepted"] += spans[i % len(bodies)]
                    i += 1
                elif honor_retry_after:
                    await asyncio.sleep(
                        min(float(response.headers.get("Retry-After", "1")), max(0.0, stop_at - time.monotonic()))
                    )
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome[type(exc).__name__] += 1


def _rss_mib(pid: int, key: str = "VmRSS") -> float:
    try:
        return _status_kib(pid, key) / 1024
    except OSError:
        return 0.0


async def _sample(
    probe: LagProbe, pids: dict[str, int], samples: list[dict[str, Any]], t0: float, until: asyncio.Event
) -> None:
    while not until.is_set():
        try:
            lag: int | None = await asyncio.to_thread(probe.measure, 5.0)
        except Exception:  # noqa: BLE001 - a failed sample is recorded as unknown
            lag = None
        samples.append(
            {
                "t_s": round(time.monotonic() - t0, 2),
                "lag_records": lag,
                **{f"{name}_rss_mib": round(_rss_mib(pid), 1) for name, pid in pids.items()},
            }
        )
        try:
            await asyncio.wait_for(until.wait(), 0.5)
        except TimeoutError:
            pass


async def run(args: argparse.Namespace, stack: LiveStack, bodies: list[bytes], spans: list[int]) -> dict[str, Any]:
    kafka = KafkaSettings()
    probe = LagProbe(stack.broker.bootstrap, kafka.group_id, kafka.topic)  # type: ignore[union-attr]
    pids = stack.pids()
    samples: list[dict[str, Any]] = []
    outcome: Counter = Counter()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=args.senders)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        # Warm-up: one request stored end to end means the worker joined its group.
        async with session.post(
            stack.traces_url, data=bodies[0], headers={"Content-Type": "application/x-protobuf"}
        ) as response:
            assert response.status == 200, response.status
        deadline = time.monotonic() + 180
        while await asyncio.to_thread(probe.measure, 5.0) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not consume the warm-up request")
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(_sample(probe, pids, samples, t0, stop_sampling))
        stop_at = t0 + args.duration
        await asyncio.gather(
            *(
                _sender(session, stack.traces_url, bodies, spans, k * 7, stop_at, outcome, not args.no_retry_after)
                for k in range(args.senders)
            )
        )
        sent_s = time.monotonic() - t0
        lag_at_stop = await asyncio.to_thread(probe.measure, 5.0)
        drain_deadline = time.monotonic() + args.drain_timeout
        lag = lag_at_stop
        while lag > 0 and time.monotonic() < drain_deadline:
            await asyncio.sleep(0.5)
            lag = await asyncio.to_thread(probe.measure, 5.0)
        drained_s = time.monotonic() - t0 - sent_s
        stop_sampling.set()
        await sampler
    probe.close()
    during = [s for s in samples if s["t_s"] <= sent_s and s["lag_records"] is not None]
    steady = [s["lag_records"] for s in during if s["t_s"] >= sent_s / 2]
    return {
        "requests": dict(outcome),
        "accepted_requests": outcome["200"],
        "refused_429": outcome["429"],
        "spans_accepted": outcome["spans_accepted"],
        "sending_s": round(sent_s, 1),
        "accepted_spans_per_s": round(outcome["spans_accepted"] / sent_s),
        "lag_max_records": max((s["lag_records"] for s in during), default=None),
        "lag_median_second_half_records": statistics.median(steady) if steady else None,
        "lag_at_stop_records": lag_at_stop,
        "drain_s": round(drained_s, 1),
        "lag_after_drain_records": lag,
        "peak_rss_mib": {name: round(_rss_mib(pid, "VmHWM"), 1) for name, pid in pids.items()},
        "peak_rss_sampled_mib": {name: max(s[f"{name}_rss_mib"] for s in samples) for name in pids},
        "rss_after_drain_mib": {name: round(_rss_mib(pid), 1) for name, pid in pids.items()},
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--max-lag", type=int, default=500, help="receiver.max_consumer_lag_records (0 = off)")
    parser.add_argument("--spans-per-request", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch-max-records", type=int, default=32)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument(
        "--no-retry-after", action="store_true", help="senders retry at once instead of waiting Retry-After"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    captured = capture_loadgen(20_000, seed=11)
    bodies, _made = build_payloads(captured, 20_000, args.spans_per_request)
    spans = [args.spans_per_request] * len(bodies)
    spans[-1] = _made - args.spans_per_request * (len(bodies) - 1)
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as data_dir:
        stack = LiveStack(
            Path(data_dir),
            args.partitions,
            args.batch_max_records,
            extra_env={"LLMOPS_RECEIVER__MAX_CONSUMER_LAG_RECORDS": str(args.max_lag)},
        )
        stack.start()
        try:
            result = asyncio.run(run(args, stack, bodies, spans))
        finally:
            stack.stop()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    report = {
        "benchmark": "overload",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "python": platform.python_version()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "request_bytes_median": int(statistics.median(len(b) for b in bodies)),
        **result,
    }
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    output = args.output or ROOT / "benchmarks" / "results" / f"overload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
