"""The embedded broker's memory and the unstored window under a flood through `llmops up`.

Starts `llmops up` on a temporary data dir and free ports, floods it with
`--senders` concurrent `llmops loadgen --count N` processes (the real OTel SDK
exporter), and samples every 0.5 s: the Tansu process's RSS (VmRSS) and the
spans stored (SQL endpoint). When the senders are done it waits for the drain
(stored == acknowledged), samples RSS for `--settle` more seconds, then stops
`up` with SIGINT.

Figures: broker RSS before, at peak, after the drain; the largest number of
acknowledged-but-not-yet-stored spans seen (what killing the whole stack at that
moment would lose: it sits in the memory broker) and that number at the end of
the flood. Not a test: it measures, it asserts nothing.

    .venv/bin/python benchmarks/bench_broker_memory.py --senders 8 --count 25000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

import clickhouse_connect  # noqa: E402

from llmops.broker import free_port  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stored(sql_port: int) -> int:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=sql_port, database="llmops", compress=False)
    try:
        return int(client.query("SELECT count() FROM otel_traces").result_rows[0][0])
    finally:
        client.close()


def child_pid(parent: int, word: str) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if ppid == parent and word in cmd:
                return int(entry.name)
    raise RuntimeError(f"no child of {parent} runs {word}")


def main() -> None:
    logging.getLogger("clickhouse_connect").setLevel(
        logging.CRITICAL
    )  # the SQL endpoint is down while a refresh restarts the worker
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=8, help="Concurrent loadgen processes.")
    parser.add_argument("--count", type=int, default=25000, help="LLM calls per sender (each call is ~3-4 spans).")
    parser.add_argument("--settle", type=float, default=15.0, help="Seconds of RSS samples after the drain.")
    parser.add_argument(
        "--broker-max-rss-mib",
        type=int,
        default=None,
        help="kafka.embedded_max_rss_mib for the run (default: the setting's default).",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON result file.")
    args = parser.parse_args()

    http, grpc_port, sql = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")} | {
        "PYTHONPATH": str(ROOT),
        "LLMOPS_LOG_LEVEL": "WARNING",
    }
    if args.broker_max_rss_mib is not None:
        env["LLMOPS_KAFKA__EMBEDDED_MAX_RSS_MIB"] = str(args.broker_max_rss_mib)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    flags = [
        "--data-dir",
        str(data_dir),
        "--otlp-http-port",
        str(http),
        "--otlp-grpc-port",
        str(grpc_port),
        "--sql-port",
        str(sql),
    ]
    up = subprocess.Popen(
        [sys.executable, "-m", "llmops", "up", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert up.stdout is not None
    for line in up.stdout:
        if "Ctrl-C to stop" in line:
            break
    else:
        raise SystemExit("llmops up did not start")
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True).start()  # type: ignore[arg-type]
    samples: list[tuple[float, float, int]] = []  # (t, broker RSS MiB, stored spans)
    t0 = time.monotonic()

    def sample() -> tuple[float, float, int]:
        try:
            rss = rss_mib(child_pid(up.pid, "tansu"))
        except (RuntimeError, OSError):  # between two brokers during a refresh
            rss = 0.0
        try:
            count = stored(sql)
        except Exception:  # the worker restarts during a refresh
            count = samples[-1][2] if samples else 0
        point = (round(time.monotonic() - t0, 2), round(rss, 1), count)
        samples.append(point)
        return point

    before = sample()
    senders = [
        subprocess.Popen([sys.executable, "-m", "llmops", "loadgen", "--endpoint", f"http://127.0.0.1:{http}",
                          "--count", str(args.count), "--seed", str(seed), "--json", "--quiet"],
                         env=env, stdout=subprocess.PIPE, text=True)
        for seed in range(args.senders)
    ]  # fmt: skip
    flood_start = time.monotonic()
    while any(s.poll() is None for s in senders):
        sample()
        time.sleep(0.5)
    flood_s = time.monotonic() - flood_start
    summaries = [json.loads(s.communicate()[0]) for s in senders]
    acknowledged = sum(s["spans_acknowledged"] for s in summaries)
    at_flood_end = sample()
    drain_deadline = time.monotonic() + 900
    while sample()[2] < acknowledged and time.monotonic() < drain_deadline:
        time.sleep(0.5)
    drained_at = time.monotonic()
    while time.monotonic() - drained_at < args.settle:
        sample()
        time.sleep(0.5)
    after = sample()
    up.send_signal(signal.SIGINT)
    up.wait(timeout=300)
    shutil.rmtree(data_dir, ignore_errors=True)

    # Acknowledged-but-unstored spans over time: acknowledgements are only known per sender at its end, so the
    # flood-time figure uses the acknowledged rate (acknowledged / flood seconds) as the sent curve.
    rate = acknowledged / flood_s
    window = [
        max(0, min(acknowledged, round(rate * (t - (flood_start - t0)))) - s)
        for t, _, s in samples
        if t <= at_flood_end[0]
    ]
    result = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "senders": args.senders,
        "spans_acknowledged": acknowledged,
        "flood_s": round(flood_s, 1),
        "acknowledged_spans_per_s": round(rate),
        "drain_s_after_flood": round(drained_at - flood_start - flood_s, 1),
        "broker_max_rss_mib": args.broker_max_rss_mib,
        "broker_refreshes": sum("embedded broker refreshed" in line for line in lines),
        "supervisor_log": [line.strip() for line in lines if "llmops.supervisor" in line],
        "broker_rss_mib": {"before": before[1], "peak": max(p[1] for p in samples), "after_drain": after[1]},
        "unstored_spans_at_flood_end": acknowledged - at_flood_end[2],
        "unstored_spans_peak_estimate": max(window, default=0),
        "samples": samples,
    }
    output = args.output or ROOT / "benchmarks" / "results" / f"broker-memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    print(f"full result: {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
