"""Issue 17 §2, §5, §7: one real `llmops up`; the other commands find it through its data dir, and it shows a live view.

`up` runs with stdout on a pipe, so its live view is the plain line-per-interval
mode; the terminal mode is driven on a pseudo-terminal against the same
stack. The stack is stopped by the last test (Ctrl-C), which checks the
closing note.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest
from rich.console import Console

from llmops.broker import free_port
from llmops.config import Settings
from llmops.live import LiveView, read_snapshot, render, summary_line
from llmops.loadgen import LoadgenOptions, run_loadgen
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

BUDGETS = 'budgets:\n  - id: everyone-daily\n    scope: {environment: prod}\n    per_day: "1000.00"\n'


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}


def llmops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmops", *args], env=_env(), capture_output=True, text=True, timeout=120, cwd="/"
    )


@dataclass
class Up:
    proc: subprocess.Popen[str]
    data_dir: Path
    http: int
    grpc: int
    sql: int
    budgets: Path
    lines: list[str] = field(default_factory=list)
    calls_sent: int = 0  # LLM calls the receiver acknowledged so far

    def read_all(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data_dir = tmp_path_factory.mktemp("up") / "data"
    budgets = data_dir.parent / "budgets.yaml"
    budgets.write_text(BUDGETS)
    stack = Up(None, data_dir, free_port(), free_port(), free_port(), budgets)  # type: ignore[arg-type]
    argv = [sys.executable, "-m", "llmops", "up", "--data-dir", str(data_dir), "--otlp-http-port", str(stack.http),
            "--otlp-grpc-port", str(stack.grpc), "--sql-port", str(stack.sql), "--budgets-file", str(budgets),
            "--live-interval", "0.5"]  # fmt: skip
    stderr = (data_dir.parent / "up.stderr").open("w")
    stack.proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.PIPE, stderr=stderr, text=True, cwd="/")
    reader = threading.Thread(target=stack.read_all, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any("Ctrl-C to stop" in line for line in stack.lines) or stack.proc.poll() is not None,
            120,
            "the banner",
        )
        assert stack.proc.poll() is None, (data_dir.parent / "up.stderr").read_text()
        summary = run_loadgen(LoadgenOptions(endpoint=f"http://127.0.0.1:{stack.http}", count=400, seed=17))
        assert summary.complete
        stack.calls_sent = summary.llm_spans_acknowledged
        yield stack
    finally:
        if stack.proc.poll() is None:
            stack.proc.send_signal(signal.SIGINT)
            try:
                stack.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                stack.proc.kill()
                stack.proc.wait()
        stderr.close()


def _sql_client(up: Up):
    return clickhouse_connect.get_client(host="127.0.0.1", port=up.sql, database="llmops", compress=False)


def _calls(up: Up) -> int:
    client = _sql_client(up)
    try:
        return int(client.query("SELECT count() FROM llm_calls").result_rows[0][0])
    finally:
        client.close()


def test_up_writes_what_it_runs_into_the_data_dir(up: Up) -> None:
    state = json.loads((up.data_dir / "stack.json").read_text())
    assert state["pid"] == up.proc.pid
    assert (state["otlp_http_port"], state["otlp_grpc_port"], state["sql_port"]) == (up.http, up.grpc, up.sql)
    assert state["data_dir"] == str(up.data_dir.resolve())
    assert state["budgets_file"] == str(up.budgets.resolve())
    assert state["kafka"].startswith("127.0.0.1:")


def test_report_finds_the_stack_of_its_data_dir_without_a_port(up: Up) -> None:
    wait_until(lambda: _calls(up) == up.calls_sent, 120, "the calls stored")
    result = llmops("report", "--json", "--data-dir", str(up.data_dir))  # no --sql-port: 8123 is not this stack's
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["llm_calls"] == _calls(up)
    sql = llmops("sql", "--data-dir", str(up.data_dir), "SELECT count() FROM llm_calls FORMAT TSV")
    assert sql.returncode == 0, sql.stderr
    assert int(sql.stdout) == _calls(up)
    assert llmops("pricing", "unpriced", "--data-dir", str(up.data_dir)).returncode == 0


def test_a_stack_file_pointing_at_another_stacks_port_is_refused(up: Up, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    state = json.loads((up.data_dir / "stack.json").read_text())
    (other / "stack.json").write_text(json.dumps({**state, "data_dir": str(other)}))
    result = llmops("report", "--data-dir", str(other))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (
            f"llmops report: the SQL endpoint on 127.0.0.1:{up.sql} serves another store than data dir {other}: "
            "another llmops took the port; stop it and restart `llmops up`"
        )
    ]


def test_budgets_uses_the_running_stacks_budgets_file(up: Up) -> None:
    result = llmops("budgets", "--data-dir", str(up.data_dir))
    assert result.returncode == 0, result.stderr
    assert "everyone-daily" in result.stdout


def _drift_keys(up: Up) -> list[tuple[str, ...]]:
    client = _sql_client(up)
    try:
        return [
            tuple(r)
            for r in client.query(
                "SELECT DISTINCT service, model, prompt_name, prompt_version FROM llm_drift"
            ).result_rows
        ]
    finally:
        client.close()


def test_drift_pin_needs_no_kafka_flag_while_up_runs(up: Up) -> None:
    # The drift scenario spreads its calls over 4 drift windows of event time ending now: the first ones close.
    # A service of its own: the fixture's calls put the default services' drift watermarks at now, which would
    # make these older calls late (dropped from the samples) and leave only a window that closes at wall-clock time.
    count = 2000
    summary = run_loadgen(
        LoadgenOptions(
            endpoint=f"http://127.0.0.1:{up.http}",
            count=count,
            scenario="drift",
            seed=5,
            services=("drift-pin",),
            time_step_ns=4 * 900 * 10**9 // count,
        )
    )
    assert summary.complete
    up.calls_sent += summary.llm_spans_acknowledged
    wait_until(lambda: bool(_drift_keys(up)), 120, "a closed drift window")
    service, model, name, version = _drift_keys(up)[0]
    pin = [
        "drift",
        "pin",
        "--data-dir",
        str(up.data_dir),
        "--service",
        service,
        "--model",
        model,
        "--prompt-name",
        name,
        "--prompt-version",
        version,
    ]
    result = llmops(*pin)  # no --kafka: the stack file names the broker
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pinned the current reference of {service}/{model}/{name}/{version}"


def test_live_view_prints_one_line_per_interval_when_not_a_terminal(up: Up) -> None:
    wait_until(
        lambda: any(
            line.startswith("[") and "calls/s=" in line and "top=[" in line and "top=[-]" not in line
            for line in up.lines
        ),
        60,
        "a live line with the stored calls",
    )
    live = [line for line in up.lines if "calls/s=" in line]
    for key in (
        "spans/s=",
        "cost_last_min=$",
        "cost_today=$",
        "ttft_p95=",
        "error_rate=",
        "unpriced=",
        "drifted_keys=",
        "ingest_errors=",
    ):
        assert key in live[-1], live[-1]


def test_render_shows_the_stores_numbers(up: Up) -> None:
    wait_until(lambda: _calls(up) == up.calls_sent, 120, "every call stored")  # nothing moves while we compare
    client = _sql_client(up)
    try:
        snapshot = read_snapshot(client)
        top_model, top_cost = client.query(
            "SELECT model, toString(sum(cost)) FROM llm_calls WHERE ts >= toStartOfDay(now()) "
            "GROUP BY model ORDER BY sum(cost) DESC LIMIT 1"
        ).result_rows[0]
        today = Decimal(
            client.query("SELECT toString(sum(cost)) FROM llm_calls WHERE ts >= toStartOfDay(now())").result_rows[0][0]
        )
    finally:
        client.close()
    assert snapshot.cost_today == today
    assert snapshot.top_models[0][:2] == (top_model, Decimal(top_cost))
    out = io.StringIO()
    Console(file=out, width=140).print(render(snapshot))
    text = out.getvalue()
    assert f"${today:,.4f}" in text and top_model in text and "TTFT p95" in text
    assert snapshot.by_requested_model and all(summary_line(*row) in text for row in snapshot.by_requested_model)


def test_live_view_redraws_in_place_on_a_terminal(up: Up) -> None:
    master, slave = pty.openpty()
    out = os.fdopen(slave, "w", encoding="utf-8")
    stop = threading.Event()
    view = LiveView(Settings(data_dir=up.data_dir), stop, interval_s=0.2, out=out)
    seen = bytearray()
    view.start()
    try:
        wait_until(lambda: _read_available(master, seen).count(b"top models by cost today") >= 2, 60, "two frames")
    finally:
        stop.set()
        view.join(timeout=10)
        out.close()
        os.close(master)
    assert b"\x1b[" in seen  # rich moves the cursor back to redraw the frame in place
    assert b"calls/s=" not in seen  # not the plain mode


def _read_available(fd: int, into: bytearray) -> bytearray:
    if select.select([fd], [], [], 0.1)[0]:
        into.extend(os.read(fd, 65536))
    return into


def test_ctrl_c_stops_and_says_where_the_data_is(up: Up) -> None:
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=180) == 0
    wait_until(lambda: any("llmops report --data-dir" in line for line in up.lines), 10, "the closing note")
    text = "".join(up.lines)
    assert f"The data is in {up.data_dir.resolve()}" in text
    assert f"llmops report --data-dir {up.data_dir}" in text
    assert not (up.data_dir / "stack.json").exists()
