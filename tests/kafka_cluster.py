"""Apache Kafka (KRaft) on loopback from the Maven Central jars: one node, or three for the fault tests.

Every node is a combined broker + controller (``process.roles=broker,controller``), as in docker-compose.yml,
with its own free ports and a temporary data directory that `stop()` deletes. Storage is formatted
first with Kafka's own storage tool and one generated cluster id; the nodes then run ``kafka.Kafka`` with a small
heap. Start-up is waited on by asking the cluster (describe cluster / topic metadata), never by sleeping.

A node can be killed (SIGKILL) and started again on the same ports and data directory, which is what the fault
tests do to a partition leader and to a single broker behind the collector.
"""

from __future__ import annotations

import base64
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from llmops.broker import free_port
from tests.kafka_jars import kafka_classpath

__all__ = ["KafkaCluster", "KafkaNode"]

HEAP = "-Xmx384m"
LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


@dataclass
class KafkaNode:
    node_id: int
    home: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.home / "server.properties"

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class KafkaCluster:
    """``size`` combined KRaft nodes; with three, topics default to replication 3 and min.insync.replicas 2."""

    def __init__(self, size: int = 1, *, log_level: str = "WARN") -> None:
        self.size = size
        self.log_level = log_level
        self.root = Path(tempfile.mkdtemp(prefix=f"kafka{size}-"))
        self.classpath = kafka_classpath()
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding (its Uuid.toString()).
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        self.nodes = [KafkaNode(node_id, self.root / f"node{node_id}") for node_id in range(1, size + 1)]
        self._admin: AdminClient | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    def node(self, node_id: int) -> KafkaNode:
        return next(node for node in self.nodes if node.node_id == node_id)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 180.0) -> KafkaCluster:
        try:
            for node in self.nodes:
                self._write_config(node)
                self._format(node)
            for node in self.nodes:
                self._launch(node)
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every node and delete the data. (SIGTERM would wait for controlled shutdowns that a cluster losing
        its quorum node by node cannot finish; nothing of a test cluster needs to survive.)"""
        for node in self.nodes:
            if node.running():
                self.kill(node)
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self, node: KafkaNode) -> None:
        """SIGKILL: no controlled shutdown, no flush (what a crashed machine does)."""
        assert node.process is not None
        node.process.kill()
        node.process.wait()

    def stop_node(self, node: KafkaNode) -> None:
        """SIGTERM: controlled shutdown; waits for the process to exit."""
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        self._reap(node, 60.0)

    def restart(self, node: KafkaNode, timeout_s: float = 120.0) -> None:
        """Start a stopped or killed node again on its ports and data directory; returns once it serves metadata
        as a registered broker (the rest of the cluster may still list it from before: ask the node itself)."""
        assert not node.running(), f"node {node.node_id} is still running"
        self._launch(node)
        self.wait_ready(timeout_s, only=node)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ readiness and metadata

    def admin(self) -> AdminClient:
        """One admin client per cluster (a future outlives its call only while its client lives). Its log is quiet:
        connection errors to a node that is down are what the fault tests cause on purpose."""
        if self._admin is None:
            self._admin = AdminClient(
                {"bootstrap.servers": self.bootstrap, "client.id": "llmops-test-admin", "log_level": 2}
            )
        return self._admin

    def wait_ready(self, timeout_s: float = 120.0, only: KafkaNode | None = None) -> None:
        """Every running node is a live broker in the cluster's metadata (as `only` itself reports it, if given)."""
        want = {node.node_id for node in self.nodes if node.running()}
        admin = self.admin() if only is None else AdminClient({"bootstrap.servers": only.address, "log_level": 2})
        deadline = time.monotonic() + timeout_s
        seen: set[int] = set()
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None and node.node_id in want:
                    raise RuntimeError(
                        f"Kafka node {node.node_id} exited with {node.process.returncode}:\n{node.log_tail()}"
                    )
            try:
                described = admin.describe_cluster(request_timeout=5).result(timeout=10)
                seen = {broker.id for broker in described.nodes}
                if want <= seen and described.controller is not None:
                    return
            except Exception:  # not up yet: connection refused, timeouts, no controller elected
                pass
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- node {n.node_id}\n{n.log_tail(10)}" for n in self.nodes)
                raise RuntimeError(
                    f"Kafka not ready after {timeout_s}s (brokers seen {sorted(seen)}, want {sorted(want)})\n{tails}"
                )
            time.sleep(0.2)

    def wait_in_sync(self, topic: str, timeout_s: float = 120.0) -> None:
        """Every partition of `topic` has a leader and all running nodes in its in-sync replicas."""
        want = {node.node_id for node in self.nodes if node.running()}
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                partitions = self.admin().list_topics(topic, timeout=10).topics[topic].partitions.values()
                if partitions and all(p.leader in want and want <= set(p.isrs) for p in partitions):
                    return
            except Exception:  # metadata not available during an election
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: replicas not in sync after {timeout_s}s")
            time.sleep(0.2)

    def partition_leader(self, topic: str, partition: int = 0) -> int:
        """The partition's leader's node id, or -1 while none is known.

        Right after a broker dies the metadata request can go to it and time out (seen: one fault-test failure in
        five); that is "not known yet", as during the election itself, not an error.
        """
        try:
            metadata = self.admin().list_topics(topic, timeout=10)
            return metadata.topics[topic].partitions[partition].leader
        except (KafkaException, KeyError):  # KeyError: the answering broker does not know the topic yet
            return -1

    def in_sync_replicas(self, topic: str, partition: int = 0) -> list[int]:
        metadata = self.admin().list_topics(topic, timeout=10)
        return list(metadata.topics[topic].partitions[partition].isrs)

    # ------------------------------------------------------------------ internals

    def _java(self, node: KafkaNode, main: str, *args: str) -> list[str]:
        return [
            "java",
            HEAP,
            "-Xms64m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
            "-cp",
            self.classpath,
            main,
            *args,
        ]

    def _write_config(self, node: KafkaNode) -> None:
        node.home.mkdir(parents=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        rf = self.replication_factor
        min_isr = 2 if rf >= 3 else 1
        properties = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.home / "data",
            # As in docker-compose.yml: topics are created on purpose, with their partition count.
            "auto.create.topics.enable": "false",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "unclean.leader.election.enable": "false",
            # Test-sized, not production: fewer internal partitions to elect on two cores, groups form at once.
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.num.partitions": 4,
            "share.coordinator.state.topic.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.segment.bytes": 16 * 1024 * 1024,
        }
        node.config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (node.home / "log4j2.properties").write_text(LOG4J2.format(log=node.log, level=self.log_level))

    def _format(self, node: KafkaNode) -> None:
        done = subprocess.run(
            self._java(
                # One argument, "--cluster-id=…": a random id may begin with "-", which argparse would take for a flag.
                node,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id}",
                "--config",
                str(node.config),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Kafka storage format failed for node {node.node_id}:\n{done.stdout}\n{done.stderr}")

    def _launch(self, node: KafkaNode) -> None:
        with open(node.home / "stdout.log", "ab") as out:
            node.process = subprocess.Popen(
                self._java(node, "kafka.Kafka", str(node.config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @staticmethod
    def _reap(node: KafkaNode, timeout_s: float) -> None:
        assert node.process is not None
        try:
            node.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
