"""Shared fixtures for integration tests: one real Tansu broker per session, real worker/receiver processes,
and a migrated chDB store per module."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import clickhouse_connect
import pytest

from collector.config import KafkaSettings
from llmops.broker import EmbeddedBroker, free_port
from llmops.stack import spawn_component, wait_for_line
from llmops.store import endpoint_alive
from llmops.topics import ensure_topics
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from tests.child_process import stop_process
from tests.kafka_cluster import KafkaCluster
from tests.kafka_jars import KafkaUnavailable, kafka_classpath
from tests.otelcol_build import OtelcolUnavailable, otelcol_binary


def wait_until(
    check: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.1
) -> None:
    """Poll a readiness check (never a blind sleep)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


STORED_SPANS = "SELECT count() FROM otel_traces"


def endpoint_count(port: int, sql: str) -> int:
    """The first value of `sql` on a running SQL endpoint at 127.0.0.1:`port`; 0 while it does not answer yet."""
    try:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port, database="llmops", compress=False)
    except Exception:
        return 0
    try:
        return int(client.query(sql).result_rows[0][0])
    finally:
        client.close()


def read_until_banner(proc: subprocess.Popen[str]) -> list[str]:
    """The lines `llmops up` prints up to its banner's last line (it is ready then); all of them if it exits first.
    `output_after` gives the rest once it has exited."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C to stop" in line:
            break
    return lines


def output_after(proc: subprocess.Popen[str], lines: list[str]) -> str:
    """Everything `proc` printed: `lines` read before and the rest of its output."""
    return "".join(lines) + (proc.stdout.read() if proc.stdout is not None else "")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker("127.0.0.1") as running:
        yield running


@dataclass
class Stack:
    """A receiver and a worker process on their own topics, group and chDB store."""

    bootstrap: str
    data_dir: Path
    env_overrides: dict[str, str]
    topic: str
    dead_letter_topic: str
    drift_topic: str
    agent_topic: str
    group_id: str
    broker_kind: str = "tansu"  # the session broker fixture; the production-path tests pass "kafka"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    sql_port: int = field(default_factory=free_port)
    worker: subprocess.Popen[str] | None = None
    receiver: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LLMOPS_KAFKA__BOOTSTRAP": self.bootstrap,
                "LLMOPS_KAFKA__TOPIC": self.topic,
                "LLMOPS_KAFKA__DEAD_LETTER_TOPIC": self.dead_letter_topic,
                "LLMOPS_KAFKA__DRIFT_TOPIC": self.drift_topic,
                "LLMOPS_KAFKA__AGENT_TOPIC": self.agent_topic,
                "LLMOPS_KAFKA__GROUP_ID": self.group_id,
                "LLMOPS_KAFKA__BROKER_KIND": self.broker_kind,
                "LLMOPS_DATA_DIR": str(self.data_dir),
                "LLMOPS_RECEIVER__HTTP_PORT": str(self.http_port),
                "LLMOPS_RECEIVER__GRPC_PORT": str(self.grpc_port),
                "LLMOPS_SQL__PORT": str(self.sql_port),
                "LLMOPS_LOG_LEVEL": "WARNING",
            }
        )
        env.update(self.env_overrides)
        return env

    def start_worker(self) -> None:
        worker = self.worker = spawn_component("worker", self.env(), None)
        wait_until(
            lambda: endpoint_alive("127.0.0.1", self.sql_port) or worker.poll() is not None, 90, "worker SQL endpoint"
        )
        assert self.worker.poll() is None, f"worker exited with {self.worker.returncode}"

    def start_receiver(self) -> None:
        self.receiver = spawn_component("receive", self.env(), None)
        wait_for_line(self.receiver, "receiver ready", 60)

    def stop_worker(self, kill: bool = False) -> None:
        if self.worker is None:
            return
        if kill:
            self.worker.kill()
            self.worker.wait()
        else:
            stop_process(self.worker)
        self.worker = None

    def stop(self) -> None:
        stop_process(self.receiver)
        self.stop_worker()

    def reader(self):
        """clickhouse-connect's HTTP client against the worker's read-only endpoint, or the store itself once the
        worker stopped."""
        if self.worker is None:
            from sinks.clickhouse.client import connect

            return connect(f"chdb://{self.data_dir.resolve() / 'clickhouse'}", "llmops", readonly=True)
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.sql_port, database="llmops", compress=False)

    def count(self, sql: str) -> int:
        client = self.reader()
        try:
            return int(client.query(sql).result_rows[0][0])
        finally:
            client.close()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="module")
def make_stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def factory(partitions: int = 2, **env_overrides: str) -> Stack:
        name = uuid.uuid4().hex[:8]
        stack = Stack(
            bootstrap=broker.bootstrap,
            data_dir=tmp_path_factory.mktemp(f"stack-{name}"),
            env_overrides=env_overrides,
            topic=f"otlp_spans_{name}",
            dead_letter_topic=f"otlp_spans_dlq_{name}",
            drift_topic=f"llm_drift_signals_{name}",
            agent_topic=f"agent_spans_{name}",
            group_id=f"llmops-{name}",
        )
        ensure_topics(
            broker.bootstrap,
            KafkaSettings(
                topic=stack.topic,
                dead_letter_topic=stack.dead_letter_topic,
                drift_topic=stack.drift_topic,
                agent_topic=stack.agent_topic,
                partitions=partitions,
            ),
        )
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def chdb_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[clickhouse_connect.driver.client.Client]:
    """One chDB store per module with the project's migrations (a process opens one chDB path at a time)."""
    client = connect(f"chdb://{tmp_path_factory.mktemp('chdb')}", "llmops", create_database=True)
    try:
        apply_migrations(client, "llmops")
        yield client
    finally:
        client.close()


# -- the production path: an OpenTelemetry Collector built from upstream, Apache Kafka from Maven Central ----------


_PREBUILD = pytest.StashKey[threading.Thread]()


def _prebuild_production_parts() -> None:
    for build in (otelcol_binary, kafka_classpath):
        try:
            build()
        except Exception:  # noqa: BLE001 - the production_parts fixture builds again and reports (or skips)
            return


# The slowest groups first, so `-n 2 --dist loadgroup` (make test) starts them at once instead of ending on them.
_HEAVY_FIRST = (
    "production",
    "tests/test_scale_out.py",
    "tests/test_up_supervision.py",
    "tests/test_drift_calibration.py",
)


def _group_for_xdist(items: list[pytest.Item]) -> None:
    """One xdist group per test file (its module fixtures start once), and one for both production-path files.

    The production path runs three Kafka brokers (JVMs), the Collector and several workers: its two files share a
    group so they never run beside each other on two cores.
    """
    groups = {
        item.nodeid: "production" if item.get_closest_marker("production_path") else item.nodeid.split("::", 1)[0]
        for item in items
    }
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    rank = {group: index for index, group in enumerate(_HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid], len(rank)))  # stable: file order kept otherwise


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start building the collector and fetching Kafka's jars while the tests before the production path run.

    On a clean machine that takes minutes; in the background it overlaps the unit and embedded tests instead of
    adding to the suite. The build cache's file lock makes the fixture wait for this build rather than repeat it.
    """
    _group_for_xdist(items)
    if config.option.collectonly or not any(item.get_closest_marker("production_path") for item in items):
        return
    thread = threading.Thread(target=_prebuild_production_parts, name="production-parts", daemon=True)
    config.stash[_PREBUILD] = thread
    thread.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A session that ends early still lets the build finish: it is cached, and no half-built scratch dir is left."""
    thread = session.config.stash.get(_PREBUILD, None)
    if thread is not None:
        thread.join()


@pytest.fixture(scope="session")
def production_parts() -> None:
    """Build the collector and fetch Kafka's jars (cached after the first run); skip in one line where Go or Java
    is missing."""
    try:
        otelcol_binary()
        kafka_classpath()
    except (OtelcolUnavailable, KafkaUnavailable) as missing:
        pytest.skip(f"production path not run: {missing}")


@pytest.fixture(scope="module")
def apache_kafka(production_parts: None) -> Iterator[KafkaCluster]:
    """One Apache Kafka node (KRaft, broker + controller) per module."""
    with KafkaCluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def apache_kafka_3(production_parts: None) -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes: replication factor 3, min.insync.replicas 2."""
    with KafkaCluster(3) as cluster:
        yield cluster
