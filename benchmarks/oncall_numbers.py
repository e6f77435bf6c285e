"""What on-call sees over an hour of demo traffic: the error-rate split and change events, before/after issue 16.

Not a test: run by hand, results in the issue's closing note.

    PYTHONPATH=$PWD python benchmarks/oncall_numbers.py [--minutes 60] [--old-ref <git commit>]

One hour of `llmops up --demo` traffic (20 LLM calls/s, loadgen's steady mix) goes through the
OpenTelemetry SDK to a local OTLP/HTTP sink and through the pipeline's own decode, normalise,
price and aggregate code into chDB; then the same calls through the drift path (DriftSender
records, decoded, into the DriftTracker) in 2-second batches with the wall clock following event
time, as the drift worker sees them. Printed:

- the "Error rate by model" numbers the old panel showed (grouped by billed model) and the new
  panel's (by requested model), for gpt-4o;
- change events per hour with this tree's tracker and, with --old-ref, the tracker of that commit
  (its whole drift path, in a child process on that commit's files: `drift_replay.py`);
- for `--scenario drift`, how far the switch's event is from the first call with the new version.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.drift_replay import OLD_TREE_CHILD, drift_events
from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen
from processors.core.drift.stream import DriftStageConfig, DriftTracker
from processors.core.drift.wire import DriftSender, decode_payload
from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, parse_records
from processors.stages import build_call_stages
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink
from tests.otlp_sink import collecting_otlp_sink

RATE = 20.0
START_NS = 1_764_000_000 // 900 * 900 * 10**9


def _old_tree_events(ref: str, bodies: list[bytes]) -> list[str]:
    """Change events of the same traffic through the drift path of commit `ref` (a tree from before the core
    layer), run in a child process on that commit's files."""
    tree = Path(tempfile.mkdtemp(prefix="oncall-old-"))
    archive = subprocess.run(["git", "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    payload = tree / "bodies.pickle"
    payload.write_bytes(pickle.dumps((bodies, START_NS)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(Path(__file__).parent)])}
    # cwd: `python -c` puts the working directory first on sys.path, which must not be this tree.
    out = subprocess.run(
        [sys.executable, "-c", OLD_TREE_CHILD, str(payload)], env=env, cwd=tree, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"the drift path of {ref} failed:\n{out.stderr}")
    return out.stdout.splitlines()


def _traffic(minutes: float, scenario: str) -> list[bytes]:
    with collecting_otlp_sink() as (url, bodies):
        summary = run_loadgen(
            LoadgenOptions(
                endpoint=url,
                count=int(minutes * 60 * RATE),
                seed=1,
                start_ns=START_NS,
                time_step_ns=int(1e9 / RATE),
                scenario=scenario,
            )
        )
    assert summary.complete
    _traffic.summary = summary  # type: ignore[attr-defined]
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--scenario", default="mixed", choices=["mixed", "drift"])
    parser.add_argument("--old-ref", default=None, help="git commit whose drift tracker to compare with")
    args = parser.parse_args()
    bodies = _traffic(args.minutes, args.scenario)
    stages = build_call_stages(Settings())
    parsed, poison = parse_records([SourceRecord("otlp_spans", 0, i, b, "bench/0") for i, b in enumerate(bodies)])
    decoded = decode_parsed(parsed, stages)
    assert not poison
    client = connect(f"chdb://{tempfile.mkdtemp(prefix='oncall-numbers-')}", "llmops", create_database=True)
    apply_migrations(client, "llmops")
    sink = ClickHouseSink(client, "llmops")
    for n, rows in enumerate(build_tables(decoded, {}, stages, now_ms=START_NS // 10**6)):
        sink.write(rows, token=f"{rows.table}:{n}")
    calls = client.query("SELECT count() FROM llm_calls").result_rows[0][0]
    print(f"{args.minutes:g} min of demo traffic ({args.scenario}): {calls:,} LLM calls")
    print("Error rate by model, old panel (billed model):")
    for model, n, e in client.query(
        "SELECT model, sum(calls), sum(errors) FROM llm_usage_1m WHERE model LIKE 'gpt-4o%' "
        "AND model NOT LIKE 'gpt-4o-mini%' GROUP BY model ORDER BY model"
    ).result_rows:
        print(f"  {model:<22} {e:>5,} of {n:>6,} failed ({e / n:.1%})")
    print("Error rate by requested model, new panel:")
    for model, n, e in client.query(
        "SELECT request_model, sum(calls), sum(errors) FROM llm_usage_1m GROUP BY request_model ORDER BY request_model"
    ).result_rows:
        print(f"  {model:<22} {e:>5,} of {n:>6,} failed ({e / n:.1%})")
    hours = args.minutes / 60
    config = DriftStageConfig(window_s=900, lateness_s=60, idle_close_s=30)
    sender = DriftSender(900, sample_size=1000, max_windows=8)
    new = drift_events(decoded, START_NS, sender, decode_payload, lambda clock: DriftTracker(config, clock=clock))
    print(f"change events, this tree: {len(new)} ({len(new) / hours:.1f} per hour)")
    for e in new[:10]:
        print("   ", e[:7])
    if args.old_ref:
        old = _old_tree_events(args.old_ref, bodies)
        print(f"change events, {args.old_ref[:8]}: {len(old)} ({len(old) / hours:.1f} per hour)")
        for line in old[:10]:
            print("   ", line)
    summary = _traffic.summary  # type: ignore[attr-defined]
    if summary.drift is not None:
        switch = [e for e in new if e[2] == "prompt_version"]
        for e in switch:
            print(
                f"switch event {e[3]} -> {e[4]}: {(e[0] - summary.drift.switch_time_ns) / 1e9:+.3f} s "
                f"from the first call on {e[4]}"
            )


if __name__ == "__main__":
    main()
