"""Keep `llmops up`'s worker and receiver running, and stop the stack in order with every step bounded.

Why restart instead of stopping the stack: the embedded broker keeps records in
memory only. A worker that dies (a crash, an OOM kill, `kill -9`) leaves
acknowledged records in the broker; stopping the broker with it would lose
them. So a worker or receiver that exits is started again with exponential
backoff (0.5 s doubling to 30 s; a run of 60 s resets it) while the broker keeps
running with its data. It never gives up: giving up would stop the broker and
lose what it holds; after 5 fast failures in a row one error line says so and
where to look, and the receiver's lag bound keeps refusing new data meanwhile.
Start-up failures are still fatal (`llmops up` fails fast); only what dies after
start-up is restarted.

A broker that dies is fatal: its records are gone, nothing can drain. The
supervisor says so and stops the children.

Stopping, in order: the receiver flushes what it accepted into the broker, the
worker drains the broker (a dead worker is restarted to do it) and commits,
then the worker stops, then the broker. Each step has a time limit
(`StopTimeouts`), a process that already exited is not waited on, and a broker
that is gone is not drained. Children run through `llmops.child_guard`: they die
with the supervisor whatever kills it and ignore SIGTERM, so a SIGTERM sent to
every process at once (systemd's default) still stops them in this order; they
are stopped with SIGINT.

All methods must be called from one thread that lives as long as the children
(the main thread): the kernel's parent-death signal follows the forking thread.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["RestartPolicy", "Backoff", "StopTimeouts", "Child", "Supervisor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    healthy_after_s: float = 60.0  # a run at least this long resets the backoff
    warn_after: int = 5  # fast failures in a row before one error line


class Backoff:
    """Delay before the next start: doubles per fast failure, capped; a healthy run resets it."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def next_delay(self, ran_s: float) -> float:
        if ran_s >= self.policy.healthy_after_s:
            self.failures = 0
        delay = min(self.policy.max_delay_s, self.policy.first_delay_s * 2**self.failures)
        self.failures += 1
        return delay


@dataclass(frozen=True)
class StopTimeouts:
    receiver_s: float = 45.0  # the receiver's own flush is bounded by receiver.delivery_timeout_s (30 s)
    drain_s: float = 120.0  # the worker consumes what the broker still holds
    worker_s: float = 60.0  # faust stops its agents and commits
    broker_s: float = 10.0

    @property
    def total_s(self) -> float:
        return self.receiver_s + self.drain_s + self.worker_s + self.broker_s


class Broker(Protocol):
    def exit_code(self) -> int | None: ...

    def stop(self) -> None: ...


class Child:
    """One supervised process (`llmops worker` or `llmops receive`), started by `spawn`, restarted when it exits."""

    def __init__(self, name: str, spawn: Callable[[], subprocess.Popen[str]], policy: RestartPolicy = RestartPolicy()) -> None:
        self.name = name
        self._spawn = spawn
        self.backoff = Backoff(policy)
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._restart_at: float | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = self._spawn()
        self._started_at = time.monotonic()
        self._restart_at = None
        return self.proc

    def supervise(self, now: float) -> None:
        """Restart the process once its backoff delay passed; schedule that when it just exited."""
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.restarts += 1
                proc = self.start()
                if proc.stdout is not None:  # nobody waits for its ready line: keep its pipe from filling
                    threading.Thread(target=_discard, args=(proc.stdout,), name=f"{self.name}-output", daemon=True).start()
                log.warning("%s restarted (restart %d, pid %d)", self.name, self.restarts, proc.pid)
            return
        if self.proc is None or (code := self.proc.poll()) is None:
            return
        ran_s = now - self._started_at
        delay = self.backoff.next_delay(ran_s)
        log.warning("%s exited with code %s after %.1f s; restarting in %.1f s", self.name, code, ran_s, delay)
        if self.backoff.failures == self.backoff.policy.warn_after:
            log.error(
                "%s failed %d times in a row within %.0f s of starting; still restarting every %.0f s at most "
                "(the broker keeps the records it holds): see the %s's log above for the cause",
                self.name, self.backoff.failures, self.backoff.policy.healthy_after_s, self.backoff.policy.max_delay_s, self.name,
            )  # fmt: skip
        self.proc = None
        self._restart_at = now + delay

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float) -> None:
        """SIGINT (SIGTERM is blocked in guarded children), wait at most `timeout_s`, then SIGKILL."""
        self._restart_at = None
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s did not stop within %.0f s; killing it", self.name, timeout_s)
            proc.kill()
            proc.wait()


class Supervisor:
    """The running stack: an embedded broker (None with an external Kafka), the worker and the receiver."""

    def __init__(self, broker: Broker | None, worker: Child, receiver: Child, lag: Callable[[], int],
                 timeouts: StopTimeouts = StopTimeouts(), poll_s: float = 0.2) -> None:  # fmt: skip
        self.broker = broker
        self.worker = worker
        self.receiver = receiver
        self._lag = lag
        self.timeouts = timeouts
        self._poll_s = poll_s

    def broker_gone(self) -> str | None:
        if self.broker is None or (code := self.broker.exit_code()) is None:
            return None
        return f"the embedded broker exited (code {code}); the records it held are lost"

    def check(self) -> str | None:
        """One supervision round: restart what exited. Returns why the stack must stop, or None."""
        if (fatal := self.broker_gone()) is not None:
            return fatal
        now = time.monotonic()
        self.worker.supervise(now)
        self.receiver.supervise(now)
        return None

    def shutdown(self) -> None:
        """Receiver, drain, worker, broker: in that order, each bounded by `timeouts`."""
        started = time.monotonic()
        self.receiver.stop(self.timeouts.receiver_s)
        if self.broker is not None:
            self._drain()
        self.worker.stop(self.timeouts.worker_s)
        if self.broker is not None:
            self.broker.stop()
        log.info("stack stopped in %.1f s", time.monotonic() - started)

    def _drain(self) -> None:
        """Wait until the worker committed every record the broker holds: the embedded broker forgets on stop."""
        deadline = time.monotonic() + self.timeouts.drain_s
        lag = -1
        while time.monotonic() < deadline:
            if (fatal := self.broker_gone()) is not None:
                log.error("%s: nothing left to drain", fatal)
                return
            self.worker.supervise(time.monotonic())  # a worker that died (or was signalled) comes back to drain
            try:
                lag = self._lag()
            except Exception as exc:  # the broker may be slow to answer during shutdown: keep asking
                log.warning("could not read consumer lag: %s", exc)
            if lag == 0:
                return
            time.sleep(self._poll_s)
        log.error("stopping with %d records not yet processed after %.0f s of draining: they are lost", lag, self.timeouts.drain_s)


def _discard(stream: Any) -> None:
    for _ in stream:
        pass
