"""Benchmark: sketch update rate on one core, and the merged-quantile query in chDB.

(1) ``GroupedSketches.from_batch`` (the hot path of the latency stage) and the full
    ``metric_rows`` (sketch + stats + columnar rows) on batches of realistic size.
(2) 7 days x 1440 one-minute windows x 50 keys = 504,000 partial ``ttft_ms`` rows with
    sketches of realistic size (a Poisson(40) number of calls per window and key,
    lognormal TTFT with a per-key median), loaded into chDB, then the Grafana-style query
    ``sketch_quantile(sumMap(sketch), q)`` over the whole range.

Run: ``.venv/bin/python benchmarks/bench_sketch.py`` (``--days 1`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import clickhouse_connect
import numpy as np
from clickhouse_connect.driver.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import median_seconds
from processors.core.latency import metric_rows
from processors.core.sketch import GroupedSketches

MIGRATION = Path(__file__).resolve().parents[1] / "schemas" / "migrations" / "003_llm_latency_1m.sql"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def bench_update(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    out = []
    for size, groups in ((10_000, 150), (100_000, 150), (1_000_000, 3_000)):
        values = rng.lognormal(np.log(400.0), 0.9, size)
        ids = rng.integers(0, groups, size)
        t = median_seconds(partial(GroupedSketches.from_batch, ids, values, groups), repeat=max(3, 2_000_000 // size))
        out.append(
            (
                f"from_batch  {size:>9,} values, {groups:>5} groups",
                f"{size / t / 1e6:8.1f} M values/s",
                f"{t * 1e3:8.2f} ms",
            )
        )
    for size, keys in ((10_000, 50), (100_000, 50)):
        values = rng.lognormal(np.log(400.0), 0.9, size)
        windows = T0 + 60 * rng.integers(0, 3, size)
        key_ids = rng.integers(0, keys, size)
        names = [(f"svc{k % 10}", "prod", "openai", f"model{k // 10}", f"model{k // 10}", "chat") for k in range(keys)]
        t = median_seconds(
            partial(metric_rows, windows, key_ids, names, "ttft_ms", values), repeat=max(3, 1_000_000 // size)
        )
        out.append(
            (
                f"metric_rows {size:>9,} values, {keys:>5} keys x 3 min",
                f"{size / t / 1e6:8.1f} M values/s",
                f"{t * 1e3:8.2f} ms",
            )
        )
    return out


def load(client: Client, rng: np.random.Generator, days: int, keys: int) -> tuple[int, int, float]:
    names = [(f"svc{k % 10}", "prod", "openai", f"model{k // 10}", f"model{k // 10}", "chat") for k in range(keys)]
    medians = rng.uniform(150.0, 1500.0, keys)
    rows_total = buckets_total = 0
    started = time.perf_counter()
    for day in range(days):
        minutes = np.arange(1440)
        per_cell = rng.poisson(40, size=(1440, keys)).ravel()  # calls per (minute, key)
        cell_window = np.repeat(T0 + 86_400 * day + 60 * np.repeat(minutes, keys), per_cell)
        cell_key = np.repeat(np.tile(np.arange(keys), 1440), per_cell)
        values = rng.lognormal(np.log(medians[cell_key]), 0.6)
        rows = metric_rows(cell_window, cell_key, names, "ttft_ms", values)
        client.insert("llm_latency_1m", rows.column_data(), column_names=list(rows.column_names), column_oriented=True)  # type: ignore[arg-type]  # clickhouse-connect inserts numpy columns; its annotation says Sequence
        rows_total += len(rows)
        buckets_total += sum(len(m) for m in rows.columns["sketch"])
        print(f"  loaded day {day + 1}/{days}: {rows_total:,} rows, {time.perf_counter() - started:6.1f} s", flush=True)
    return rows_total, buckets_total, time.perf_counter() - started


def bench_query(client: Client, days: int) -> list[tuple[str, str, str]]:
    lo, hi = "2026-01-01 00:00:00", f"2026-01-{1 + days:02d} 00:00:00"
    queries = {
        "per model (5 groups)": (
            "SELECT model, sketch_quantile(sumMap(sketch), 0.5), sketch_quantile(sumMap(sketch), 0.95),"
            " sketch_quantile(sumMap(sketch), 0.99) FROM llm_latency_1m"
            f" WHERE metric = 'ttft_ms' AND window_start >= '{lo}' AND window_start < '{hi}' GROUP BY model"
        ),
        "all keys (1 group)": (
            "SELECT sketch_quantile(sumMap(sketch), 0.99) FROM llm_latency_1m"
            f" WHERE metric = 'ttft_ms' AND window_start >= '{lo}' AND window_start < '{hi}'"
        ),
        "view, per key (50 groups)": (
            f"SELECT model, service, p50, p95, p99 FROM llm_latency_merged(from_ts = '{lo}', to_ts = '{hi}')"
            " WHERE metric = 'ttft_ms'"
        ),
        "per hour x model (840 grp)": (
            "SELECT toStartOfHour(window_start) AS h, model, sketch_quantile(sumMap(sketch), 0.95) FROM llm_latency_1m"
            f" WHERE metric = 'ttft_ms' AND window_start >= '{lo}' AND window_start < '{hi}' GROUP BY h, model"
        ),
    }
    out = []
    for name, sql in queries.items():
        start = time.perf_counter()
        client.query(sql)
        first = time.perf_counter() - start
        warm = median_seconds(partial(client.query, sql), repeat=5)
        out.append((f"query {name}", f"first {first * 1e3:7.0f} ms", f"median {warm * 1e3:7.0f} ms"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--path", help="chDB data directory (default: a fresh temporary one, removed afterwards)")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)

    print("sketch update, pinned to one core:", flush=True)
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        table = bench_update(rng)
    finally:
        os.sched_setaffinity(0, cpus)

    path = args.path or tempfile.mkdtemp(prefix="bench_sketch_chdb_")
    try:
        boot = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        boot.command("CREATE DATABASE IF NOT EXISTS llmops")
        boot.close()
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}", database="llmops")
        for statement in MIGRATION.read_text().split(";\n"):
            if statement.strip():
                client.command(statement)
        client.command("TRUNCATE TABLE llm_latency_1m")
        print(f"loading {args.days} days x 1440 minutes x {args.keys} keys into chDB at {path}", flush=True)
        rows, buckets, load_s = load(client, rng, args.days, args.keys)
        parts = client.query("SELECT count() FROM system.parts WHERE table = 'llm_latency_1m' AND active").result_rows[
            0
        ][0]
        table.append(
            (
                f"load {rows:,} rows, {buckets / rows:.1f} buckets/row",
                f"{rows / load_s:8,.0f} rows/s",
                f"{load_s:8.1f} s",
            )
        )
        table += bench_query(client, args.days)
        client.close()
    finally:
        if not args.path:
            shutil.rmtree(path, ignore_errors=True)

    print(f"\n{'what':<48} {'rate / first':>22} {'time / median':>18}")
    for what, a, b in table:
        print(f"{what:<48} {a:>22} {b:>18}")
    print(f"(chDB uses all {len(os.sched_getaffinity(0))} cores for the queries; {parts} active parts, no OPTIMIZE)")


if __name__ == "__main__":
    main()
