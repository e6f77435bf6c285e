"""`llmops up` on a bad day: a worker killed under traffic, `up` itself killed, every process signalled at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from llmops.broker import free_port
from llmops.loadgen import LoadgenOptions, LoadgenSummary, run_loadgen
from llmops.supervisor import Backoff, RestartPolicy, rss_mib
from tests.conftest import STORED_SPANS, endpoint_count, wait_until

STOP_BOUND_S = 300  # generous: StopTimeouts().total_s is 235 s; a clean stop takes seconds


def test_backoff_doubles_caps_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(RestartPolicy(first_delay_s=0.5, max_delay_s=4.0, healthy_after_s=60.0))
    assert [backoff.next_delay(ran_s=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failures == 6
    assert backoff.next_delay(ran_s=60.0) == 0.5
    assert backoff.failures == 1


class Up:
    """`llmops up` in a session of its own (so its process group can be signalled), with the output kept."""

    def __init__(self, data_dir: Path, ports: tuple[int, int, int], **env_overrides: str) -> None:
        self.http, grpc_port, self.sql = ports
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")} | env_overrides
        flags = [
            "--data-dir",
            str(data_dir),
            "--otlp-http-port",
            str(self.http),
            "--otlp-grpc-port",
            str(grpc_port),
            "--sql-port",
            str(self.sql),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmops", "up", *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        wait_until(lambda: self._ready.is_set() or self.proc.poll() is not None, 180, "llmops up ready")
        assert self._ready.is_set(), self.output()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Ctrl-C to stop" in line:
                self._ready.set()

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            wait_until(check, timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- llmops up output:\n{self.output()}") from None

    def children(self) -> dict[int, str]:
        """pid -> command line of up's live children (broker, worker, receiver)."""
        return {pid: cmd for pid, ppid, cmd in _processes() if ppid == self.proc.pid}

    def child(self, word: str) -> int:
        pids = [pid for pid, cmd in self.children().items() if word in cmd.split()]
        assert len(pids) == 1, self.children()
        return pids[0]

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=STOP_BOUND_S)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def stored(self) -> tuple[int, int]:
        """(rows, distinct span ids) in otel_traces, read from the store after the stack stopped."""
        from sinks.clickhouse.client import connect

        client = connect(f"chdb://{self.data_dir.resolve() / 'clickhouse'}", "llmops", readonly=True)
        try:
            rows, distinct = client.query("SELECT count(), uniqExact(SpanId) FROM otel_traces").result_rows[0]
            return int(rows), int(distinct)
        finally:
            client.close()


def _processes() -> list[tuple[int, int, str]]:
    """(pid, ppid, command line) of every live, non-zombie process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            found.append((int(entry.name), int(ppid), cmd))
    return found


def _alive(pid: int) -> bool:
    return any(p == pid for p, _, _ in _processes())


def _ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def test_a_worker_killed_under_traffic_is_restarted_and_every_acknowledged_span_is_stored_once(tmp_path) -> None:
    up = Up(tmp_path, _ports())
    try:
        worker = up.child("worker")
        result: list[LoadgenSummary] = []
        options = LoadgenOptions(endpoint=f"http://127.0.0.1:{up.http}", count=12000, seed=14, stop_on_failure=False)
        sender = threading.Thread(target=lambda: result.append(run_loadgen(options)))
        sender.start()
        wait_until(
            lambda: (up.children() and endpoint_count(up.sql, STORED_SPANS) > 0) or not sender.is_alive(),
            120,
            "first spans stored",
        )
        os.kill(worker, signal.SIGKILL)
        sender.join(timeout=600)
        wait_until(lambda: "worker restarted" in up.output(), 60, "the worker restarted")
        restarted = up.child("worker")
        assert restarted != worker
        up.proc.send_signal(signal.SIGINT)
        assert up.wait() == 0, up.output()
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
    _assert_acknowledged_stored_once(up, result[0])


def _assert_acknowledged_stored_once(up: Up, summary: LoadgenSummary) -> None:
    """No span twice and none acknowledged lost. A span may be stored without its acknowledgement: the
    receiver produced it but the client's export timed out, or the response was cut by the stop."""
    assert summary.spans_acknowledged > 0
    rows, distinct = up.stored()
    assert rows == distinct, up.output()
    assert summary.spans_acknowledged <= distinct <= summary.spans_sent, (summary, distinct, up.output())


def test_sigkill_of_up_leaves_no_child_and_a_second_up_starts_on_the_same_ports(tmp_path) -> None:
    ports = _ports()
    up = Up(tmp_path / "first", ports)
    children = up.children()
    assert len(children) == 3, children  # broker, worker, receiver
    os.kill(up.proc.pid, signal.SIGKILL)
    up.proc.wait()
    wait_until(lambda: not any(_alive(pid) for pid in children), 30, f"children {sorted(children)} gone")
    second = Up(tmp_path / "second", ports)  # EADDRINUSE here if an orphan kept a port
    second.proc.send_signal(signal.SIGINT)
    assert second.wait() == 0, second.output()


def test_sigterm_to_every_process_at_once_stops_in_order_and_keeps_what_was_acknowledged(tmp_path) -> None:
    """systemd's default stop: SIGTERM to the whole cgroup, here while traffic flows. The children ignore it; `up`
    stops them in order (receiver, drain, worker, broker), so what the broker held when the signal came is stored."""
    up = Up(tmp_path, _ports())
    result: list[LoadgenSummary] = []
    options = LoadgenOptions(endpoint=f"http://127.0.0.1:{up.http}", count=30000, seed=15, export_timeout_s=5)
    sender = threading.Thread(target=lambda: result.append(run_loadgen(options)))
    sender.start()
    wait_until(lambda: endpoint_count(up.sql, STORED_SPANS) > 0 or not sender.is_alive(), 120, "first spans stored")
    children = up.children()
    assert len(children) == 3, children
    os.killpg(up.proc.pid, signal.SIGTERM)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    assert up.wait() == 0, up.output()
    sender.join(timeout=120)
    wait_until(lambda: not any(_alive(pid) for pid in children), 30, "children gone")
    _assert_acknowledged_stored_once(up, result[0])


def test_the_embedded_broker_is_refreshed_past_its_memory_limit_and_nothing_acknowledged_is_lost(tmp_path) -> None:
    """Tansu's memory storage frees no record: past the limit `up` drains the broker and starts it afresh."""
    up = Up(tmp_path, _ports(), LLMOPS_KAFKA__EMBEDDED_MAX_RSS_MIB=str(LIMIT_MIB))
    try:
        first_broker = up.child("broker")
        assert (rss_mib(first_broker) or 0) < LIMIT_MIB
        published = json.loads((tmp_path / "stack.json").read_text())["kafka"]
        assert f"tcp://{published}" in up.children()[first_broker].split()
        options = LoadgenOptions(endpoint=f"http://127.0.0.1:{up.http}", count=4000, seed=16, stop_on_failure=False)
        before = run_loadgen(options)
        up.wait_for(lambda: "embedded broker refreshed" in up.output(), 300, "the broker refreshed")
        broker = up.child("broker")
        assert broker != first_broker
        assert (rss_mib(broker) or LIMIT_MIB) < LIMIT_MIB
        # The fresh broker listens where stack.json says (clients such as `llmops drift pin` read it from there).
        assert json.loads((tmp_path / "stack.json").read_text())["kafka"] == published
        assert f"tcp://{published}" in up.children()[broker].split()
        up.wait_for(lambda: endpoint_ready(up), 120, "receiver and SQL endpoint back")
        after = run_loadgen(options.model_copy(update={"seed": 17}))  # same topics on the fresh broker, new topic ids
        up.proc.send_signal(signal.SIGINT)
        assert up.wait() == 0, up.output()
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
    acknowledged = before.spans_acknowledged + after.spans_acknowledged
    assert before.spans_acknowledged > 0 and after.spans_acknowledged > 0
    assert up.stored() == (acknowledged, acknowledged), up.output()


LIMIT_MIB = 22  # Tansu starts at ~18 MiB; 4,000 LLM calls (~17k spans) add ~9 MiB (BENCHMARKS.md: ~0.5 KiB per span)


def endpoint_ready(up: Up) -> bool:
    import socket

    from llmops.store import endpoint_alive

    try:
        socket.create_connection(("127.0.0.1", up.http), timeout=0.5).close()
    except OSError:
        return False
    return endpoint_alive("127.0.0.1", up.sql)


def test_a_dead_broker_ends_the_stack_and_says_so(tmp_path) -> None:
    up = Up(tmp_path, _ports())
    children = up.children()
    os.kill(up.child("broker"), signal.SIGKILL)
    assert up.wait() == 1, up.output()
    assert "embedded broker exited" in up.output()
    wait_until(lambda: not any(_alive(pid) for pid in children), 30, "children gone")
