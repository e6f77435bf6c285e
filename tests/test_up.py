"""`llmops up` as a user runs it: start, send traffic, Ctrl-C, and everything accepted is stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from llmops.broker import free_port
from llmops.loadgen import LoadgenOptions, run_loadgen
from llmops.store import endpoint_alive
from tests.conftest import output_after, read_until_banner, wait_until

pytestmark = pytest.mark.integration


def test_up_serves_and_stops_gracefully_keeping_what_it_accepted(tmp_path) -> None:
    http, grpc_port, sql = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    flags = [
        "--data-dir",
        str(tmp_path),
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
    )
    try:
        lines = read_until_banner(up)
        assert any(f"http://127.0.0.1:{http}/v1/traces" in line for line in lines), lines
        wait_until(lambda: endpoint_alive("127.0.0.1", sql), 30, "the SQL endpoint")
        summary = run_loadgen(LoadgenOptions(endpoint=f"http://127.0.0.1:{http}", count=3000, seed=3))
        assert summary.complete
        up.send_signal(signal.SIGINT)  # right away: the drain, not a wait, must bring every span in
        assert up.wait(timeout=180) == 0, output_after(up, lines)
    finally:
        if up.poll() is None:
            up.kill()
    # After the stack stopped, report opens the store itself.
    out = subprocess.run(
        [sys.executable, "-m", "llmops", "report", "--json", *flags[:2], "--sql-port", str(sql)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    totals = json.loads(out)["totals"]
    assert totals["spans"] == summary.spans_acknowledged and totals["llm_calls"] == summary.llm_spans_acknowledged
    wait_until(lambda: not endpoint_alive("127.0.0.1", sql), 5, "endpoint closed")
