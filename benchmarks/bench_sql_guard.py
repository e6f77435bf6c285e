"""What the SQL endpoint's parser-based check costs per query: a bare chDB handle vs SqlEngine (check + run).

PYTHONPATH=. .venv/bin/python benchmarks/bench_sql_guard.py --repeat 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import chdb

from llmops.sql_engine import QueryLimits, SqlEngine, engine_path
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from tests.grafana_macros import ALL, TimeRange, Variable, render_panel_query


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    import json
    from datetime import datetime, timedelta

    root = Path(tempfile.mkdtemp())
    dsn = f"chdb://{root / 'clickhouse'}"
    writer = connect(dsn, "llmops", create_database=True)
    apply_migrations(writer, "llmops")
    dash = json.loads(next((Path(__file__).resolve().parents[1] / "dashboards" / "json").glob("*.json")).read_text())
    now = datetime(2026, 3, 2, tzinfo=UTC)
    variables = {name: Variable(name, (ALL,)) for name in ("service", "environment", "team", "model")}
    panel = render_panel_query(
        dash["panels"][0]["targets"][0]["rawSql"],
        variables,
        TimeRange(now - timedelta(hours=1), now, timedelta(minutes=1)),
    )
    engine = SqlEngine(engine_path(dsn), "llmops", QueryLimits(), max_concurrent_queries=1)
    engine.open()
    bare = chdb.connect(engine_path(dsn))
    bare.query("USE llmops", "TSV")
    guard = engine.guard
    assert guard is not None, "the engine is open"

    def describe(text: str, params: Mapping[str, str]) -> bytes:
        return bare.query(text, "TSVRaw", params=dict(params)).bytes()

    print("| query | bare chDB handle | SqlEngine (check + run) | check alone |")
    print("|---|---|---|---|")
    for name, sql in (
        ("SELECT 1", "SELECT 1"),
        ("SHOW TABLES", "SHOW TABLES"),
        (f"dashboard panel ({len(panel)} chars)", panel),
    ):
        raw = _median_ms(partial(bare.query, sql, "TSV"), args.repeat)
        guarded = _median_ms(partial(engine.run_now, sql, "TSV"), args.repeat)
        check = _median_ms(partial(guard.check, sql, describe), args.repeat)
        print(f"| {name} | {raw:.2f} ms | {guarded:.2f} ms | {check:.2f} ms |")
    engine.close()
    bare.close()
    writer.close()


if __name__ == "__main__":
    main()
