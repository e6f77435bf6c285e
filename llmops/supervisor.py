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

The embedded broker's memory: Tansu 0.6's memory storage frees no record, so
past a limit the supervisor refreshes it (drain, then a fresh broker; see
`Supervisor.refresh_broker`).

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

__all__ = ["RestartPolicy", "Backoff", "StopTimeouts", "Child", "Supervisor", "rss_mib"]

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
    # With the embedded broker gone there is nothing to flush, drain or commit: what the receiver
    # holds was never acknowledged, and offsets cannot be committed, so children get this long.
    without_broker_s: float = 5.0

    @property
    def total_s(self) -> float:
        return self.receiver_s + self.drain_s + self.worker_s + self.broker_s


class Broker(Protocol):
    @property
    def pid(self) -> int | None: ...

    def exit_code(self) -> int | None: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Child:
    """One supervised process (`llmops worker` or `llmops receive`), started by `spawn`, restarted when it exits."""

    def __init__(
        self, name: str, spawn: Callable[[], subprocess.Popen[str]], policy: RestartPolicy = RestartPolicy()
    ) -> None:
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

    def start_unwatched(self) -> subprocess.Popen[str]:
        """Start without waiting for a ready line: keep its output pipe drained."""
        proc = self.start()
        if proc.stdout is not None:
            threading.Thread(target=_discard, args=(proc.stdout,), name=f"{self.name}-output", daemon=True).start()
        return proc

    def supervise(self, now: float) -> None:
        """Restart the process once its backoff delay passed; schedule that when it just exited."""
        if self._restart_at is not None:
            if now >= self._restart_at:
                self.restarts += 1
                proc = self.start_unwatched()
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
                self.name,
                self.backoff.failures,
                self.backoff.policy.healthy_after_s,
                self.backoff.policy.max_delay_s,
                self.name,
            )
        self.proc = None
        self._restart_at = now + delay

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

    def __init__(
        self,
        broker: Broker | None,
        worker: Child,
        receiver: Child,
        lag: Callable[[], int],
        timeouts: StopTimeouts = StopTimeouts(),
        poll_s: float = 0.2,
        *,
        broker_max_rss_mib: int = 0,
        create_topics: Callable[[], Any] = lambda: None,
    ) -> None:
        """`broker_max_rss_mib` > 0: refresh the embedded broker when its memory passes it (see `refresh_broker`);
        `create_topics` then creates the topics on the fresh broker."""
        self.broker = broker
        self.worker = worker
        self.receiver = receiver
        self._lag = lag
        self.timeouts = timeouts
        self._poll_s = poll_s
        self._broker_max_rss_mib = broker_max_rss_mib
        self._create_topics = create_topics
        self._next_refresh_check = 0.0
        self.broker_refreshes = 0

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
        if self.broker is not None and self._broker_max_rss_mib > 0 and now >= self._next_refresh_check:
            pid = self.broker.pid
            rss = rss_mib(pid) if pid is not None else None
            if rss is not None and rss > self._broker_max_rss_mib:
                self.refresh_broker(rss)
        return None

    def refresh_broker(self, rss: float) -> None:
        """Give the embedded broker's memory back: drain it, then start it afresh.

        Tansu 0.6's memory storage never frees a record (no retention; DeleteRecords
        panics it), so the broker grows by every byte produced. Draining it and
        starting a new one is the one way to free that memory. The receiver stops
        first (OTLP clients are refused and retry: the SDK exporters do) and
        starts again last; the fresh topics get new topic ids, and the sink's
        fences are per topic id, so offsets that restart at 0 never hide records.
        If the drain does not finish, nothing is lost: the receiver starts again on
        the same broker and the refresh is retried a minute later.
        """
        assert self.broker is not None
        started = time.monotonic()
        log.warning(
            "embedded broker holds %.0f MiB (limit %d): draining it and starting it afresh; OTLP is refused meanwhile",
            rss,
            self._broker_max_rss_mib,
        )
        self.receiver.stop(self.timeouts.receiver_s)
        if not self._drain():
            self.receiver.start_unwatched()
            self._next_refresh_check = time.monotonic() + 60.0
            return
        self.worker.stop(self.timeouts.worker_s)
        self.broker.stop()
        self.broker.start()
        self._create_topics()
        self.worker.start_unwatched()
        self.receiver.start_unwatched()
        self.broker_refreshes += 1
        pid = self.broker.pid
        log.warning(
            "embedded broker refreshed in %.1f s (%.0f MiB now)",
            time.monotonic() - started,
            (rss_mib(pid) if pid else 0) or 0,
        )

    def shutdown(self) -> None:
        """Receiver, drain, worker, broker: in that order, each bounded by `timeouts`."""
        started = time.monotonic()
        if self.broker_gone() is not None:
            self.receiver.stop(self.timeouts.without_broker_s)
            self.worker.stop(self.timeouts.without_broker_s)
            log.info("stack stopped in %.1f s", time.monotonic() - started)
            return
        self.receiver.stop(self.timeouts.receiver_s)
        if self.broker is not None and not self._drain() and self.broker_gone() is None:
            log.error("stopping anyway: the records the broker still holds are lost")
        self.worker.stop(self.timeouts.worker_s)
        if self.broker is not None:
            self.broker.stop()
        log.info("stack stopped in %.1f s", time.monotonic() - started)

    def _drain(self) -> bool:
        """Wait until the worker committed every record the broker holds: the embedded broker forgets on stop."""
        deadline = time.monotonic() + self.timeouts.drain_s
        lag = -1
        while time.monotonic() < deadline:
            if (fatal := self.broker_gone()) is not None:
                log.error("%s: nothing left to drain", fatal)
                return False
            self.worker.supervise(time.monotonic())  # a worker that died (or was signalled) comes back to drain
            try:
                lag = self._lag()
            except Exception as exc:  # the broker may be slow to answer during shutdown: keep asking
                log.warning("could not read consumer lag: %s", exc)
            if lag == 0:
                return True
            time.sleep(self._poll_s)
        log.error("%d records not yet processed after %.0f s of draining", lag, self.timeouts.drain_s)
        return False


def _discard(stream: Any) -> None:
    for _ in stream:
        pass
