"""Drift end to end: loadgen's drift scenario through the receiver, both worker stages and chDB."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmops.loadgen import LoadgenOptions, run_loadgen
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

WINDOW_S = 60
START_NS = (1_764_000_000 // WINDOW_S) * WINDOW_S * 10**9  # drift windows start on a boundary


def test_prompt_switch_gives_change_event_and_drift_for_that_key_only(make_stack) -> None:
    stack = make_stack(
        partitions=2,
        LLMOPS_DRIFT__WINDOW_S=str(WINDOW_S),
        # The run compresses 3 minutes of event time into ~3 s of sending, so the two partitions
        # can be a minute of event time apart: lateness covers that, and windows close by idle time.
        LLMOPS_DRIFT__LATENESS_S="600",
        # Idle close at 20 s: a close extracts every kept call's signals, and on a loaded CI
        # machine (two test files at once) 5 s closed keys while their later calls were still queued.
        LLMOPS_DRIFT__IDLE_CLOSE_S="20",
    )
    stack.start_worker()
    stack.start_receiver()
    # 9,000 calls 20 ms apart: three 60 s windows; fewer than 1,000 calls per key and window,
    # so every reservoir holds its whole window and the statistics do not depend on arrival order.
    summary = run_loadgen(
        LoadgenOptions(
            endpoint=stack.http_url, count=9000, seed=5, scenario="drift", start_ns=START_NS, time_step_ns=20_000_000
        )
    )
    assert summary.complete and summary.drift is not None
    key = summary.drift
    wait_until(
        lambda: stack.count("SELECT count() FROM llm_calls") == summary.llm_spans_acknowledged, 120, "calls stored"
    )
    # Windows close per key as their watermarks pass (idle close here): wait for the switched key's
    # verdict, not just for the first keys to close (the first window has no reference: no rows).
    wait_until(lambda: stack.count("SELECT uniqExact(window_start) FROM llm_drift") >= 2, 120, "drift windows closed")
    wait_until(
        lambda: stack.count(f"SELECT count() FROM llm_drift WHERE drifted AND prompt_version = '{key.to_version}'") > 0,
        120,
        "switched key evaluated",
    )
    others = (
        f"SELECT count() FROM llm_drift WHERE NOT (service = '{key.service}' AND prompt_name = '{key.prompt_name}')"
    )
    wait_until(lambda: stack.count(others) > 0, 120, "other keys evaluated")

    wait_until(lambda: stack.count("SELECT count() FROM change_events") > 0, 120, "change event written")
    client = stack.reader()
    # One change in this traffic: the switch. The steady mix of models and versions around it is no change.
    events = client.query(
        "SELECT service, kind, old_value, new_value, prompt_name, toUnixTimestamp64Nano(ts) FROM change_events"
    ).result_rows
    assert [e[:5] for e in events] == [
        (key.service, "prompt_version", key.from_version, key.to_version, key.prompt_name)
    ]
    assert abs(events[0][5] - summary.drift.switch_time_ns) <= 10**9  # stamped with the first call on the new version
    # Every verdict is judged against the past: its reference ended before the judged window opened.
    assert client.query("SELECT count() FROM llm_drift WHERE reference_end > window_start").result_rows[0][0] == 0
    assert client.query("SELECT count() FROM llm_drift").result_rows[0][0] > 0
    drifted = client.query(
        "SELECT DISTINCT service, prompt_name, prompt_version, reference FROM llm_drift WHERE drifted"
    ).result_rows
    assert drifted, "the switched key must drift"
    for service, prompt_name, version, _reference in drifted:
        assert (service, prompt_name, version) == (key.service, key.prompt_name, key.to_version), drifted
    assert any(ref.startswith(f"previous version {key.from_version}") for *_, ref in drifted)
    signals = {row[0] for row in client.query("SELECT DISTINCT signal FROM llm_drift WHERE drifted").result_rows}
    assert "answer_length" in signals
    untouched = client.query(
        "SELECT count() FROM llm_drift WHERE NOT (service = {s:String} AND prompt_name = {p:String})",
        parameters={"s": key.service, "p": key.prompt_name},
    ).result_rows[0][0]
    assert untouched > 0  # the other keys were evaluated, and none of them drifted (above)
    client.close()

    out = subprocess.run(
        [sys.executable, "-m", "llmops", "report", "--json", "--sql-port", str(stack.sql_port)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    report = json.loads(out)
    assert [e["new_value"] for e in report["change_events"] if e["kind"] == "prompt_version"] == [key.to_version]
    assert {row["prompt_version"] for row in report["drifted"]} == {key.to_version}
