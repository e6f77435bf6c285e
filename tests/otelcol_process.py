"""Run the built OpenTelemetry Collector with collector/otelcol.yaml itself, as users run it.

Only what the file reads from its environment changes: the Kafka brokers (KAFKA_BROKERS) and the ports
(OTLP_GRPC_PORT, OTLP_HTTP_PORT, OTELCOL_HEALTH_PORT, OTELCOL_METRICS_PORT), each a free loopback port here.
Readiness is the health_check extension answering 200, polled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmops.broker import free_port
from tests.otelcol_build import otelcol_binary

__all__ = ["OTELCOL_YAML", "Collector"]


class _PortTaken(RuntimeError):
    """The collector exited because a port it was given was taken meanwhile."""


OTELCOL_YAML = Path(__file__).resolve().parent.parent / "collector" / "otelcol.yaml"


@dataclass
class Collector:
    brokers: str
    log: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0, attempts: int = 3) -> Collector:
        """Start and wait until healthy. A port picked free can be taken by another process before the
        collector binds it; then every port is picked again (read the ports after `start`)."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout_s)
            except _PortTaken:
                if attempt == attempts - 1:
                    raise
                self.grpc_port, self.http_port, self.health_port, self.metrics_port = (free_port() for _ in range(4))
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> Collector:
        env = dict(os.environ)
        env.update(
            {
                "KAFKA_BROKERS": self.brokers,
                "OTLP_GRPC_PORT": str(self.grpc_port),
                "OTLP_HTTP_PORT": str(self.http_port),
                "OTELCOL_HEALTH_PORT": str(self.health_port),
                "OTELCOL_METRICS_PORT": str(self.metrics_port),
            }
        )
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(otelcol_binary()), f"--config={OTELCOL_YAML}"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.process.poll() is not None:
                tail = self.log_tail()
                if any("address already in use" in line for line in tail.splitlines()[-3:]):
                    raise _PortTaken(tail)
                raise RuntimeError(f"the collector exited with {self.process.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the collector was not healthy after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: the collector drains its queue (what it can still deliver) and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metric(self, name: str) -> float:
        """Sum of one of the collector's own Prometheus metrics over its label sets (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + "{", name + " "))
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False
