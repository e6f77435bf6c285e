"""Issue 17 §1: each mistake a new user makes gets one line on stderr that says what to do, and the right exit code.

Every case runs the real `llmops` command as a subprocess, against real parts:
a real chDB store (migrated, one drift key), real listening sockets, a real
second process holding the data dir, a broker address where nothing listens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.broker import free_port

pytestmark = pytest.mark.integration

DRIFT_KEY = ("support-bot", "gpt-4o-2024-08-06", "answer", "v3")
_SEED_STORE = """
import sys
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
client = connect(f"chdb://{sys.argv[1]}/clickhouse", "llmops", create_database=True)
apply_migrations(client, "llmops")
client.command(
    "INSERT INTO llm_drift (window_start, window_end, service, model, prompt_name, prompt_version, signal, statistic,"
    " value, threshold, drifted, n_ref, n_cur, reference) VALUES (now(), now(), %(s)s, %(m)s, %(p)s, %(v)s,"
    " 'output_length', 'ks', 0.1, 0.2, false, 100, 100, 'trailing 24h')",
    parameters=dict(zip("smpv", sys.argv[2:])),
)
"""
_HOLD_LOCK = (
    "import sys; from pathlib import Path; from llmops.stack_state import DataDirLock; "
    "DataDirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); sys.stdin.read()"
)
_BAD_PRICING = 'entries:\n  - id: my-model\n    input: "0.50\n    output: 1.5\n'


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}


def llmops(*args: str, prefix: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [*prefix, sys.executable, "-m", "llmops", *args]
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=timeout, cwd="/")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with a stopped stack's store: the tables, and one drift key with a closed window."""
    data_dir = tmp_path_factory.mktemp("store")
    subprocess.run([sys.executable, "-c", _SEED_STORE, str(data_dir), *DRIFT_KEY], env=_env(), check=True, timeout=120)
    return data_dir


@pytest.fixture
def listener() -> Iterator[Callable[[], int]]:
    """Ports another process (this test) listens on."""
    sockets: list[socket.socket] = []

    def take() -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sockets.append(sock)
        return sock.getsockname()[1]

    yield take
    for sock in sockets:
        sock.close()


@dataclass
class Case:
    args: list[str]
    exit_code: int
    expected: str  # a fragment of the one stderr line
    prefix: tuple[str, ...] = ()
    timeout: float = 120


def _up(data_dir: Path, http: int, grpc: int, sql: int, *extra: str) -> list[str]:
    return [
        "up",
        "--data-dir",
        str(data_dir),
        "--otlp-http-port",
        str(http),
        "--otlp-grpc-port",
        str(grpc),
        "--sql-port",
        str(sql),
        *extra,
    ]


def case_ports_in_use(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    http = listener()
    return Case(
        _up(tmp_path / "d", http, free_port(), free_port()),
        1,
        f"port {http} (OTLP HTTP) is in use: stop the other process or pass --otlp-http-port",
    )


def case_only_sql_port_taken(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    sql = listener()
    return Case(
        _up(tmp_path / "d", free_port(), free_port(), sql),
        1,
        f"port {sql} (SQL endpoint) is in use: stop the other process or pass --sql-port",
    )


def case_data_dir_not_writable(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    data_dir = tmp_path / "readonly"
    data_dir.mkdir(mode=0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root writes anywhere: drop the capability that lets it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable")
        prefix = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
    return Case(
        _up(data_dir, free_port(), free_port(), free_port()), 1, f"data dir {data_dir} is not writable by user", prefix
    )


def case_sql_syntax_error(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    return Case(
        ["sql", "--data-dir", str(store), "SELECT model FROM llm_calls WHERE"],
        2,
        "Code: 62. Syntax error: failed at position 34 (end of query)",
    )


def case_report_without_data(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    return Case(
        ["report", "--data-dir", str(tmp_path / "nothing")],
        1,
        f"no data in {tmp_path / 'nothing'} yet: start `llmops up`",
    )


def case_invalid_pricing_yaml(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    bad = tmp_path / "prices.yaml"
    bad.write_text(_BAD_PRICING)
    return Case(
        ["pricing", "check", "my-model", "--pricing-file", str(bad)],
        2,
        f"{bad}:5:1: while scanning a quoted scalar started at line 3, found unexpected end of stream",
    )


def case_invalid_pricing_yaml_at_up(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    bad = tmp_path / "prices.yaml"
    bad.write_text(_BAD_PRICING)
    return Case(
        _up(tmp_path / "d", free_port(), free_port(), free_port(), "--pricing-file", str(bad)),
        2,
        f"{bad}:5:1: while scanning a quoted scalar started at line 3, found unexpected end of stream",
    )


def case_broken_pricing_snapshot(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    snapshot = tmp_path / "prices.json"
    snapshot.write_text('[{"id": "openai", "models": [{"id": 3}]}]')
    args = ["pricing", "check", "gpt-4o", "--pricing-snapshot-file", str(snapshot)]
    return Case(args, 2, f"llmops pricing check: {snapshot}: not a genai-prices snapshot: ")


def case_drift_pin_unknown_key(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    args = [
        "drift",
        "pin",
        "--data-dir",
        str(store),
        "--service",
        "support-bot",
        "--model",
        "gpt-4o",
        "--prompt-name",
        "answer",
        "--prompt-version",
        "v3",
    ]
    return Case(
        args,
        1,
        "no drift key support-bot/gpt-4o/answer/v3 (service/model/prompt name/prompt version); nearest: "
        + "/".join(DRIFT_KEY),
    )


def case_drift_pin_unreachable_broker(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    service, model, name, version = DRIFT_KEY
    args = ["drift", "pin", "--data-dir", str(store), "--kafka", f"127.0.0.1:{free_port()}",
            "--service", service, "--model", model, "--prompt-name", name, "--prompt-version", version]  # fmt: skip
    # The guard is the subprocess timeout: a pin that hangs fails the test instead of the suite.
    return Case(args, 1, "did not acknowledge the pin within 4 s", timeout=90)


def case_loadgen_closed_port(tmp_path: Path, store: Path, listener: Callable[[], int]) -> Case:
    port = free_port()
    return Case(
        ["loadgen", "--endpoint", f"http://127.0.0.1:{port}", "--count", "10"],
        1,
        f"nothing accepts OTLP on 127.0.0.1:{port}",
    )


CASES = [
    case_ports_in_use,
    case_only_sql_port_taken,
    case_data_dir_not_writable,
    case_sql_syntax_error,
    case_report_without_data,
    case_invalid_pricing_yaml,
    case_invalid_pricing_yaml_at_up,
    case_broken_pricing_snapshot,
    case_drift_pin_unknown_key,
    case_drift_pin_unreachable_broker,
    case_loadgen_closed_port,
]


@pytest.mark.parametrize("make_case", CASES, ids=[c.__name__[len("case_") :] for c in CASES])
def test_one_line_on_stderr_and_the_exit_code(make_case, tmp_path: Path, store: Path, listener) -> None:
    case = make_case(tmp_path, store, listener)
    result = llmops(*case.args, prefix=case.prefix, timeout=case.timeout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert case.expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.returncode == case.exit_code, result.stderr
    if case.args[0] == "up":
        assert "llmops up:" not in result.stdout and "Ctrl-C" not in result.stdout, "refused before the banner"


def test_second_up_on_a_data_dir_in_use_names_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = llmops(*_up(tmp_path, free_port(), free_port(), free_port()))
        assert result.stderr.splitlines() == [
            (
                f"llmops up: data dir {tmp_path} is in use by another llmops (pid {holder.pid}): "
                "stop it, or pass another --data-dir"
            )
        ]
        assert result.returncode == 1
    finally:
        holder.kill()
        holder.wait()


def test_report_without_data_creates_nothing(tmp_path: Path) -> None:
    result = llmops("report", "--data-dir", str(tmp_path / ".llmops"))
    assert result.returncode == 1
    assert not (tmp_path / ".llmops").exists()


def test_sql_honours_a_trailing_format_clause(store: Path) -> None:
    result = llmops("sql", "--data-dir", str(store), "SELECT service, model FROM llm_drift FORMAT Vertical")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        "Row 1:",
        "──────",
        f"service: {DRIFT_KEY[0]}",
        f"model:   {DRIFT_KEY[1]}",
    ]


def test_debug_log_level_shows_the_traceback(tmp_path: Path) -> None:
    result = llmops("report", "--data-dir", str(tmp_path / "nothing"), "--log-level", "DEBUG")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "no data in" in result.stderr
