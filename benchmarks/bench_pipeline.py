"""End-to-end throughput of the embedded stack, per-stage rates, peak RSS and the protobuf parse ceiling, in one run.

Why: the issue's target (>= 30k spans/s end to end, <= 1 GiB peak RSS) and the
project goal (100k spans/s on 2 cores) need one number measured on the real
parts, next to the ceiling that bounds it (bare protobuf parsing of the same
bytes) and the stage rates that explain the gap.

What runs, in this order, in one invocation:
1. Payloads, generated once: `llmops.loadgen` (the real OTel SDK) sends into a
   tiny local OTLP/HTTP sink; the captured spans are regrouped into requests of
   --spans-per-request spans and replicated with rewritten trace/span ids up to
   --spans. Every request body is encoded before the clock starts.
2. Ceiling [in-process]: ExportTraceServiceRequest.ParseFromString over all bodies.
3. Live stack [live]: Tansu broker + `llmops receive` + `llmops worker` (chDB)
   as child processes, exactly as `llmops up` starts them. A warm-up request
   waits for the consumer group; then --senders concurrent aiohttp senders
   replay the bodies to POST /v1/traces while the worker's SQL endpoint is
   polled until count() FROM otel_traces reaches the total. Peak RSS (VmHWM)
   and CPU seconds per process come from /proc.
4. Stage replays [in-process]: the worker's stage functions on the same bodies,
   batch by batch (--batch-max-records): decode, decode + normalise,
   build_tables, drift payloads, ClickHouseSink.write into a separate chDB dir.

    .venv/bin/python benchmarks/bench_pipeline.py [--spans 300000] [--senders 8] [--partitions 4]
        [--batch-max-records 64] [--output benchmarks/results/pipeline-<time>.json]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.config import KafkaSettings  # noqa: E402
from llmops.broker import EmbeddedBroker, free_port  # noqa: E402
from llmops.config import Settings  # noqa: E402
from llmops.loadgen import LoadgenOptions, run_loadgen  # noqa: E402
from llmops.stack import spawn_component, wait_for_line  # noqa: E402
from llmops.store import endpoint_alive  # noqa: E402
from llmops.topics import ensure_topics  # noqa: E402
from tests.child_process import stop_process  # noqa: E402

__all__ = ["capture_loadgen", "build_payloads", "main"]

TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- payloads


def capture_loadgen(spans: int, seed: int, agent_runs: int = 0) -> list[bytes]:
    """Request bodies the OTel SDK exporter sends for about `spans` spans (2.9 spans per LLM call), and for
    `agent_runs` runs of the agents scenario (about 17.5 spans each) when asked."""
    bodies: list[bytes] = []
    response = ExportTraceServiceResponse().SerializeToString()

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(response)))
            self.end_headers()
            self.wfile.write(response)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        run_loadgen(LoadgenOptions(endpoint=endpoint, count=max(1, spans * 10 // 29), seed=seed))
        if agent_runs:
            run_loadgen(LoadgenOptions(endpoint=endpoint, scenario="agents", count=agent_runs, seed=seed))
    finally:
        server.shutdown()
    return bodies


def _remap(identifier: bytes, copy: int) -> bytes:
    """A different, still non-zero id per copy (the first two bytes carry the copy number)."""
    if not identifier:
        return identifier
    head = int.from_bytes(identifier[:2], "big") ^ copy
    return head.to_bytes(2, "big") + identifier[2:]


def build_payloads(
    captured: Sequence[bytes], total_spans: int, per_request: int, first_copy: int = 0
) -> tuple[list[bytes], int]:
    """Regroup captured spans (per resource/scope) into requests of `per_request` spans, replicated to `total_spans`.

    Copy k rewrites trace, span and parent ids, so every span stays unique.
    Returns the bodies and the number of spans they hold.
    """
    groups: list[tuple[Any, Any, list[Any]]] = []
    for body in captured:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                groups.append((rs, ss, list(ss.spans)))
    by_key: dict[bytes, tuple[Any, Any, list[Any]]] = {}
    for rs, ss, spans in groups:
        key = rs.resource.SerializeToString() + b"|" + ss.scope.SerializeToString()
        by_key.setdefault(key, (rs, ss, []))[2].extend(spans)
    base = sum(len(spans) for _, _, spans in by_key.values())
    bodies: list[bytes] = []
    made = 0
    copy = first_copy
    while made < total_spans:
        for rs, ss, spans in by_key.values():
            for start in range(0, len(spans), per_request):
                if made >= total_spans:
                    break
                chunk = spans[start : start + min(per_request, total_spans - made)]
                request = ExportTraceServiceRequest()
                out_rs = request.resource_spans.add(schema_url=rs.schema_url)
                out_rs.resource.CopyFrom(rs.resource)
                out_ss = out_rs.scope_spans.add(schema_url=ss.schema_url)
                out_ss.scope.CopyFrom(ss.scope)
                for span in chunk:
                    new = out_ss.spans.add()
                    new.CopyFrom(span)
                    if copy:
                        new.trace_id = _remap(span.trace_id, copy)
                        new.span_id = _remap(span.span_id, copy)
                        new.parent_span_id = _remap(span.parent_span_id, copy)
                bodies.append(request.SerializeToString())
                made += len(chunk)
        copy += 1
        if copy - first_copy > 60_000 or base == 0:
            raise RuntimeError("captured too few spans to replicate")
    return bodies, made


def span_total(bodies: Sequence[bytes]) -> int:
    total = 0
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        total += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    return total


# --------------------------------------------------------------------------- /proc


def _children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed): who in a process spends the CPU,
    e.g. the Python main thread against chDB's query pipeline and librdkafka's threads."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name, rest = task.joinpath("stat").read_text().split("(", 1)[1].rsplit(")", 1)
        except OSError:  # the thread ended between listing and reading
            continue
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return out


def _host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for the machine's utilisation during the run."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------- live stack


@dataclass
class LiveStack:
    data_dir: Path
    partitions: int
    batch_max_records: int
    extra_env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    sql_port: int = field(default_factory=free_port)
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[str] | None = None
    receiver: subprocess.Popen[str] | None = None
    broker_pid: int = 0

    broker_kind = "tansu"

    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LLMOPS_KAFKA__BOOTSTRAP": self.bootstrap(),
                "LLMOPS_KAFKA__BROKER_KIND": self.broker_kind,
                "LLMOPS_KAFKA__PARTITIONS": str(self.partitions),
                "LLMOPS_DATA_DIR": str(self.data_dir),
                "LLMOPS_RECEIVER__HTTP_PORT": str(self.http_port),
                "LLMOPS_RECEIVER__GRPC_PORT": str(self.grpc_port),
                "LLMOPS_SQL__PORT": str(self.sql_port),
                "LLMOPS_PROCESSOR__BATCH_MAX_RECORDS": str(self.batch_max_records),
                "LLMOPS_LOG_LEVEL": "WARNING",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        before = set(_children_of(os.getpid()))
        self.broker = EmbeddedBroker("127.0.0.1").start()
        self.broker_pid = next(iter(set(_children_of(os.getpid())) - before))
        ensure_topics(self.broker.bootstrap, KafkaSettings(partitions=self.partitions))
        self.worker = self._spawn("worker")
        deadline = time.monotonic() + 120
        while not endpoint_alive("127.0.0.1", self.sql_port):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start (exit code {self.worker.poll()})")
            time.sleep(0.1)
        self.receiver = self._spawn("receive")
        wait_for_line(self.receiver, "receiver ready", 60)

    def _spawn(self, command: str) -> subprocess.Popen[str]:
        """`python -m llmops <command>` as `llmops up` starts it; from --code-root when given
        (sys.path[0] is the cwd)."""
        code_root = self.extra_env.get("PYTHONPATH", "").split(os.pathsep)[0]
        if code_root and Path(code_root, "llmops").is_dir():
            cwd = os.getcwd()
            os.chdir(code_root)
            try:
                return spawn_component(command, self.env(), None)
            finally:
                os.chdir(cwd)
        return spawn_component(command, self.env(), None)

    def pids(self) -> dict[str, int]:
        assert self.worker is not None and self.receiver is not None
        return {"worker": self.worker.pid, "receiver": self.receiver.pid, "broker": self.broker_pid}

    def stop(self) -> None:
        stop_process(self.receiver)
        stop_process(self.worker)
        if self.broker is not None:
            self.broker.stop()

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def sql_url(self) -> str:
        return f"http://127.0.0.1:{self.sql_port}/"


@dataclass
class SendResult:
    requests: int = 0
    spans: int = 0
    retries: int = 0
    first_sent: float = 0.0
    last_acked: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


async def _count(session: aiohttp.ClientSession, sql_url: str, table: str) -> int:
    async with session.get(sql_url, params={"query": f"SELECT count() FROM llmops.{table}"}) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"SQL endpoint answered {response.status}: {text[:300]}")
        return int(text.strip())


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, result: SendResult) -> None:
    headers = {"Content-Type": "application/x-protobuf"}
    while True:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            if response.status == 200:
                return
            if response.status in (429, 503):
                result.retries += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "0.2")) / 5)
                continue
            raise RuntimeError(f"receiver answered {response.status}")


def llm_span_count(bodies: list[bytes]) -> int:
    """Spans the worker turns into llm_calls rows, counted by the worker's own decode and normaliser (the
    payload mixes conventions, and agent and tool spans carry GenAI attributes too): what the run waits for."""
    from processors.core.pipeline import SourceRecord, decode_parsed, parse_records
    from processors.stages import build_call_stages

    stages = build_call_stages(Settings())
    records = [SourceRecord("payload", 0, i, body, "payload/0") for i, body in enumerate(bodies)]
    parsed, _ = parse_records(records)
    return sum(len(record.calls) for record in decode_parsed(parsed, stages))


async def run_live(
    stack: LiveStack,
    bodies: Sequence[bytes],
    spans_per_body: Sequence[int],
    warmup: bytes,
    warmup_spans: int,
    llm_calls: int,
    senders: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Warm up, then replay `bodies`; returns client-side and end-to-end timings plus /proc figures."""
    total = sum(spans_per_body)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=senders + 2), timeout=timeout) as session:
        # The warm-up waits for the consumer group join and primes the worker's fences and topic ids.
        await _post(session, stack.traces_url, warmup, SendResult())
        warm_deadline = time.monotonic() + 120
        # Both tables: llm_calls is inserted after otel_traces, and a baseline read between the two would count the
        # warm-up's calls as the run's.
        warm_calls = llm_span_count([warmup])

        async def warmed_up() -> bool:
            if await _count(session, stack.sql_url, "otel_traces") < warmup_spans:
                return False
            return await _count(session, stack.sql_url, "llm_calls") >= warm_calls

        while not await warmed_up():
            if time.monotonic() > warm_deadline:
                raise RuntimeError("warm-up spans never became queryable")
            await asyncio.sleep(0.1)
        base_calls = await _count(session, stack.sql_url, "llm_calls")
        pids = stack.pids()
        cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
        worker_threads0 = _thread_cpu_s(pids["worker"])
        client_cpu0 = time.process_time()
        host0 = _host_cpu()
        load0 = os.getloadavg()

        result = SendResult()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in range(len(bodies)):
            queue.put_nowait(index)
        rss_samples: dict[str, int] = dict.fromkeys(pids, 0)

        async def sender() -> None:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                await _post(session, stack.traces_url, bodies[index], result)
                now = time.perf_counter()
                result.latencies_s.append(now - started)
                result.requests += 1
                result.spans += spans_per_body[index]
                result.last_acked = now

        timeline: list[tuple[float, int, int]] = []
        result.first_sent = time.perf_counter()
        tasks = [asyncio.create_task(sender()) for _ in range(senders)]
        stored = calls = 0
        traces_done_at = 0.0
        last_print = 0.0
        while True:
            await asyncio.sleep(0.1 if all(t.done() for t in tasks) else 0.5)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if not traces_done_at:
                stored = await _count(session, stack.sql_url, "otel_traces") - warmup_spans
                if stored >= total:
                    traces_done_at = time.perf_counter()
            if traces_done_at:
                calls = await _count(session, stack.sql_url, "llm_calls") - base_calls
            stored_at = time.perf_counter()
            for name, pid in pids.items():
                rss_samples[name] = max(rss_samples[name], _status_kib(pid, "VmRSS"))
            elapsed = stored_at - result.first_sent
            timeline.append((round(elapsed, 3), result.spans, stored))
            if elapsed - last_print >= 1.0 or traces_done_at:
                last_print = elapsed
                progress(
                    f"  t={elapsed:6.1f}s  accepted {result.spans:>9,} spans ({result.spans / elapsed:8,.0f}/s)  "
                    f"stored {stored:>9,} ({stored / elapsed:8,.0f}/s)"
                    + (f"  llm_calls {calls:,}/{llm_calls:,}" if traces_done_at else "")
                )
            if traces_done_at and calls >= llm_calls:
                break
            if stack.worker is not None and stack.worker.poll() is not None:
                raise RuntimeError(f"worker exited with {stack.worker.returncode}")
            if elapsed > 1800:
                raise RuntimeError("spans not all stored after 30 minutes")
        end = traces_done_at
        host1 = _host_cpu()
        cpu1 = {name: _cpu_s(pid) for name, pid in pids.items()}
        worker_threads1 = _thread_cpu_s(pids["worker"])
        client_cpu = time.process_time() - client_cpu0
        load1 = os.getloadavg()
        peak = {name: _status_kib(pid, "VmHWM") for name, pid in pids.items()}

    send_s = result.last_acked - result.first_sent
    e2e_s = end - result.first_sent
    lat = sorted(result.latencies_s)
    return {
        "spans": total,
        "stored_spans": stored,
        "stored_llm_calls": calls,
        "requests": result.requests,
        "http_retries": result.retries,
        "send_s": send_s,
        "e2e_s": e2e_s,
        "e2e_spans_per_s": total / e2e_s,
        "e2e_with_llm_calls_s": stored_at - result.first_sent,
        "accept_requests_per_s": result.requests / send_s,
        "accept_spans_per_s": result.spans / send_s,
        "accept_mb_per_s": sum(len(b) for b in bodies) / send_s / 1e6,
        "request_latency_ms": {
            "p50": 1000 * lat[len(lat) // 2],
            "p99": 1000 * lat[int(len(lat) * 0.99)],
            "max": 1000 * lat[-1],
        },
        "peak_rss_mib": {name: kib / 1024 for name, kib in peak.items()},
        "peak_rss_sampled_during_run_mib": {name: kib / 1024 for name, kib in rss_samples.items()},
        "cpu_s": {**{name: cpu1[name] - cpu0[name] for name in pids}, "bench_client": client_cpu},
        # Threads that ended during the run are missing here, so the sum can be below cpu_s["worker"].
        "worker_cpu_s_by_thread": {
            name: round(cpu - worker_threads0.get(name, 0.0), 2)
            for name, cpu in sorted(worker_threads1.items(), key=lambda kv: -kv[1])
            if cpu - worker_threads0.get(name, 0.0) >= 0.05
        },
        "host_cpu_busy_share": (host1[0] - host0[0]) / max(1, host1[1] - host0[1]),
        "loadavg_before": load0,
        "loadavg_after": load1,
        "timeline": timeline,
    }


# --------------------------------------------------------------------------- in-process stage replays


def parse_ceiling(bodies: Sequence[bytes], spans: int, repeat: int = 3) -> dict[str, float]:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for body in bodies:
            ExportTraceServiceRequest().ParseFromString(body)
        best = min(best, time.perf_counter() - started)
    return {"seconds": best, "spans_per_s": spans / best, "mb_per_s": sum(len(b) for b in bodies) / best / 1e6}


def replay_stages(bodies: Sequence[bytes], batch_records: int, chdb_dir: Path) -> dict[str, Any]:
    """The worker's stage functions, batch by batch, on the same bodies (no Kafka, no faust)."""
    from processors.core.decode import decode_request
    from processors.core.drift.wire import DriftSender
    from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, may_be_llm_call, parse_records
    from processors.stages import build_call_stages
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.migrations import apply_migrations
    from sinks.clickhouse.writer import ClickHouseSink

    settings = Settings()
    stages = build_call_stages(settings)
    drift_sender = DriftSender(settings.drift.window_s, settings.drift.reservoir_size, 2 * settings.drift.max_keys)
    client = connect(f"chdb://{chdb_dir}", "llmops", create_database=True)
    apply_migrations(client, "llmops")
    sink = ClickHouseSink(client, "llmops")
    times = {"decode": 0.0, "decode_normalise": 0.0, "build_tables": 0.0, "drift_payloads": 0.0}
    insert_s: dict[str, float] = {}
    rows: dict[str, int] = {}
    spans = calls = 0
    for start in range(0, len(bodies), batch_records):
        chunk = bodies[start : start + batch_records]
        records = [SourceRecord("otlp_spans", 0, start + i, body, "bench/0") for i, body in enumerate(chunk)]
        t0 = time.perf_counter()
        for body in chunk:
            decode_request(body, keep=may_be_llm_call)
        t1 = time.perf_counter()
        parsed, poison = parse_records(records)
        decoded = decode_parsed(parsed, stages)
        t2 = time.perf_counter()
        tables = build_tables(decoded, {}, stages)
        t3 = time.perf_counter()
        drift_sender.payloads([c for d in decoded for c in d.calls], [s for d in decoded for s in d.call_spans])
        t4 = time.perf_counter()
        times["decode"] += t1 - t0
        times["decode_normalise"] += t2 - t1
        times["build_tables"] += t3 - t2
        times["drift_payloads"] += t4 - t3
        assert not poison
        spans += sum(d.span_count for d in decoded)
        calls += sum(len(d.calls) for d in decoded)
        for table_rows in tables:
            w0 = time.perf_counter()
            sink.write(table_rows, f"{table_rows.table}:{start}")
            insert_s[table_rows.table] = insert_s.get(table_rows.table, 0.0) + time.perf_counter() - w0
            rows[table_rows.table] = rows.get(table_rows.table, 0) + len(table_rows)
        del decoded, tables
    stored = int(client.query("SELECT count() FROM llmops.otel_traces").result_rows[0][0])
    client.close()
    worker_s = sum(times[k] for k in ("decode_normalise", "build_tables", "drift_payloads")) + sum(insert_s.values())
    return {
        "spans": spans,
        "llm_calls": calls,
        "stored_check": stored,
        "seconds": {**times, **{f"insert_{t}": s for t, s in insert_s.items()}},
        "spans_per_s": {k: spans / v for k, v in times.items() if v},
        "insert_rows_per_s": {t: rows[t] / s for t, s in insert_s.items() if s and rows[t]},
        "insert_rows": rows,
        "serial_worker_spans_per_s": spans / worker_s,
        # Calls the drift sieve let through to the drift topic, of those it counted.
        "drift_calls_sent": drift_sender.calls_sent,
        "drift_calls_tallied": drift_sender.calls_tallied,
        "share_of_serial_worker_time": {
            **{k: times[k] / worker_s for k in ("decode_normalise", "build_tables", "drift_payloads")},
            **{f"insert_{t}": s / worker_s for t, s in insert_s.items()},
        },
    }


# --------------------------------------------------------------------------- main


def _table(result: dict[str, Any]) -> str:
    live, ceiling, replay = result["live"], result["ceiling"], result["replay"]
    lines = [
        (
            f"payload: {result['payload']['spans']:,} spans in {result['payload']['requests']:,} requests, "
            f"{result['payload']['bytes_per_span']:.0f} B/span on the wire, "
            f"{result['payload']['llm_spans']:,} LLM calls"
        ),
        (
            f"load average before/after: {live['loadavg_before'][0]:.2f} / {live['loadavg_after'][0]:.2f}; "
            f"host CPU busy during run {100 * live['host_cpu_busy_share']:.0f}% of {os.cpu_count()} cores"
        ),
        "",
        f"{'stage':<44}{'rate':>16}  source",
        f"{'end to end (first request -> last row)':<44}{live['e2e_spans_per_s']:>12,.0f} sp/s  live",
        (
            f"{'receiver accept':<44}{live['accept_spans_per_s']:>12,.0f} sp/s  live (client side; "
            f"{live['accept_requests_per_s']:,.0f} req/s, {live['accept_mb_per_s']:.0f} MB/s)"
        ),
        f"{'protobuf ParseFromString (ceiling)':<44}{ceiling['spans_per_s']:>12,.0f} sp/s  in-process",
        (
            f"{'decode_request (parse, check, flatten LLM spans)':<44}"
            f"{replay['spans_per_s']['decode']:>12,.0f} sp/s  in-process"
        ),
        (
            f"{'parse + decode_parsed (normalise + enrich)':<44}"
            f"{replay['spans_per_s']['decode_normalise']:>12,.0f} sp/s  in-process"
        ),
        (
            f"{'build_tables (llm_calls rows + aggregates)':<44}"
            f"{replay['spans_per_s']['build_tables']:>12,.0f} sp/s  in-process"
        ),
        (
            f"{'drift payloads (tally + sieve + encode)':<44}"
            f"{replay['spans_per_s']['drift_payloads']:>12,.0f} sp/s  in-process"
            f" ({replay['drift_calls_sent']:,} of {replay['drift_calls_tallied']:,} calls sent)"
        ),
    ]
    for table, rate in replay["insert_rows_per_s"].items():
        lines.append(
            f"{'ClickHouse insert ' + table:<44}{rate:>12,.0f} rows/s in-process "
            f"({replay['insert_rows'][table]:,} rows)"
        )
    lines += [
        (
            f"{'worker stages serially (sum of the above)':<44}"
            f"{replay['serial_worker_spans_per_s']:>12,.0f} sp/s  in-process"
        ),
        "",
        (
            f"end to end / ceiling: {result['e2e_over_ceiling']:.3f}   target 30,000 sp/s: "
            f"{'met' if live['e2e_spans_per_s'] >= 30_000 else 'NOT met'}   goal 100,000 sp/s: "
            f"{'met' if live['e2e_spans_per_s'] >= 100_000 else 'not met'}"
        ),
        "peak RSS (VmHWM): "
        + ", ".join(f"{k} {v:,.0f} MiB" for k, v in live["peak_rss_mib"].items())
        + f"  (limit 1024 MiB each: {'ok' if max(live['peak_rss_mib'].values()) <= 1024 else 'EXCEEDED'})",
        "CPU seconds during the run: "
        + ", ".join(f"{k} {v:.1f}" for k, v in live["cpu_s"].items())
        + f"  (wall {live['e2e_s']:.1f} s)",
        "worker CPU seconds by thread: " + ", ".join(f"{k} {v:.1f}" for k, v in live["worker_cpu_s_by_thread"].items()),
        (
            f"request latency p50 {live['request_latency_ms']['p50']:.0f} ms, "
            f"p99 {live['request_latency_ms']['p99']:.0f} ms; 429/503 retries {live['http_retries']}; "
            f"stored llm_calls {live['stored_llm_calls']:,} (replay found {replay['llm_calls']:,})"
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=300_000, help="Spans to send through the live stack.")
    parser.add_argument(
        "--base-spans", type=int, default=60_000, help="Spans captured from loadgen before replication."
    )
    parser.add_argument(
        "--agent-runs",
        type=int,
        default=0,
        help="Also capture this many runs of `loadgen --scenario agents` (about 17.5 spans each) into the base.",
    )
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--senders", type=int, default=8, help="Concurrent HTTP requests in flight.")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--batch-max-records",
        type=int,
        default=Settings().processor.batch_max_records,
        help="Worker batch size (also used by the replay); default: the worker's default.",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--drift", choices=["off", "on"], default="on", help="Run the worker's drift stage (LLMOPS_DRIFT__ENABLED)."
    )
    parser.add_argument(
        "--child-gc-threshold",
        default=None,
        metavar="G0,G1,G2",
        help="Experiment: gc.set_threshold(G0,G1,G2) in the worker/receiver (a temporary sitecustomize on PYTHONPATH).",
    )
    parser.add_argument(
        "--code-root",
        type=Path,
        default=None,
        help="Experiment: run the children from this copy of the tree (its processors/, sinks/, llmops/ ...).",
    )
    parser.add_argument("--no-replay", action="store_true", help="Skip the in-process stage replays.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary data directory.")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra LLMOPS_* setting for the children.",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON results file (default benchmarks/results/pipeline-<time>.json)."
    )
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    say(f"capturing ~{args.base_spans:,} spans from llmops.loadgen (OTel SDK) ...")
    captured = capture_loadgen(args.base_spans, args.seed, args.agent_runs)
    bodies, spans = build_payloads(captured, args.spans, args.spans_per_request)
    warmup, warmup_spans = build_payloads(captured, args.spans_per_request, args.spans_per_request, first_copy=0xFFFF)
    spans_per_body = [span_total([b]) for b in bodies]
    llm_spans = llm_span_count(bodies)
    wire = sum(len(b) for b in bodies)
    say(f"payload: {spans:,} spans, {len(bodies):,} requests, {wire / spans:.0f} B/span")

    say("ceiling: ParseFromString over all bodies ...")
    ceiling = parse_ceiling(bodies, spans)

    work = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    extra_env = {"LLMOPS_DRIFT__ENABLED": "true" if args.drift == "on" else "false"}
    extra_env.update(item.split("=", 1) for item in args.worker_env)
    child_paths = [str(args.code_root.resolve())] if args.code_root else []
    if args.child_gc_threshold:
        site = work / "gcsite"
        site.mkdir()
        thresholds = [int(v) for v in args.child_gc_threshold.split(",")]
        (site / "sitecustomize.py").write_text(f"import gc\ngc.set_threshold(*{thresholds!r})\n")
        child_paths.append(str(site))
    if child_paths:
        extra_env["PYTHONPATH"] = os.pathsep.join(child_paths + [p for p in [os.environ.get("PYTHONPATH", "")] if p])
    stack = LiveStack(work / "stack", args.partitions, args.batch_max_records, extra_env)
    say("starting broker, worker and receiver ...")
    try:
        stack.start()
        say(f"sending with {args.senders} concurrent senders to {stack.traces_url} ...")
        live = asyncio.run(
            run_live(stack, bodies, spans_per_body, warmup[0], warmup_spans, llm_spans, args.senders, say)
        )
    finally:
        stack.stop()
    replay: dict[str, Any] = {}
    if not args.no_replay:
        say("in-process stage replays on the same bodies ...")
        replay = replay_stages(bodies, args.batch_max_records, work / "replay-chdb")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "payload": {
            "spans": spans,
            "requests": len(bodies),
            "bytes": wire,
            "bytes_per_span": wire / spans,
            "llm_spans": llm_spans,
            "captured_requests": len(captured),
        },
        "ceiling": ceiling,
        "live": live,
        "replay": replay,
        "e2e_over_ceiling": live["e2e_spans_per_s"] / ceiling["spans_per_s"],
    }
    output = args.output or ROOT / "benchmarks" / "results" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    if replay:
        print(_table(result))
    else:
        print(json.dumps({k: v for k, v in live.items() if k != "timeline"}, indent=1))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
