"""What the SQL endpoint's parser-based check costs per query: a bare chDB handle vs SqlEngine (check + run).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sql_guard.py --repeat 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import chdb  # noqa: E402

from tests.grafana_macros import ALL, TimeRange, Variable, render_panel_query  # noqa: E402
from llmops.sql_engine import QueryLimits, SqlEngine, engine_path  # noqa: E402
from sinks.clickhouse.client import connect  # noqa: E402
from sinks.clickhouse.migrations import apply_migrations  # noqa: E402


def _median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
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
    from datetime import datetime, timedelta, timezone

    root = Path(tempfile.mkdtemp())
    dsn = f"chdb://{root / 'clickhouse'}"
    writer = connect(dsn, "llmops", create_database=True)
    apply_migrations(writer, "llmops")
    dash = json.loads(next((Path(__file__).resolve().parents[1] / "dashboards" / "json").glob("*.json")).read_text())
    now = datetime(2026, 3, 2, tzinfo=timezone.utc)
    variables = {name: Variable(name, (ALL,)) for name in ("service", "environment", "team", "model")}
    panel = render_panel_query(dash["panels"][0]["targets"][0]["rawSql"], variables, TimeRange(now - timedelta(hours=1), now, timedelta(minutes=1)))
    engine = SqlEngine(engine_path(dsn), "llmops", QueryLimits(), max_concurrent_queries=1)
    engine.open()
    bare = chdb.connect(engine_path(dsn))
    bare.query("USE llmops", "TSV")
    print(f"| query | bare chDB handle | SqlEngine (check + run) | check alone |")
    print("|---|---|---|---|")
    for name, sql in (("SELECT 1", "SELECT 1"), ("SHOW TABLES", "SHOW TABLES"), (f"dashboard panel ({len(panel)} chars)", panel)):
        raw = _median_ms(lambda: bare.query(sql, "TSV"), args.repeat)
        guarded = _median_ms(lambda: engine.run_now(sql, "TSV"), args.repeat)
        check = _median_ms(lambda: engine.guard.check(sql, lambda t, p: bare.query(t, "TSVRaw", params=dict(p)).bytes()), args.repeat)  # type: ignore[union-attr]
        print(f"| {name} | {raw:.2f} ms | {guarded:.2f} ms | {check:.2f} ms |")
    engine.close()
    bare.close()
    writer.close()


if __name__ == "__main__":
    main()
