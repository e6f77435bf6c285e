"""`llmops up`: broker (embedded unless --kafka), topics, worker and receiver processes, optional demo.

Each part is the same process a production deployment runs (`llmops worker`,
`llmops receive`); this module starts them, and llmops.supervisor restarts a
child that exits and stops them in order (receiver, drain, worker, broker).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmops.broker import EmbeddedBroker
from llmops.child_guard import guarded_argv
from llmops.config import Settings
from llmops.store import endpoint_alive, local_host
from llmops.supervisor import Child, Supervisor
from llmops.topics import consumer_lag, ensure_topics

__all__ = ["run_stack", "child_env", "spawn_component", "wait_for_line"]

log = logging.getLogger(__name__)


def child_env(overrides: dict[str, Any], bootstrap: str, broker_kind: str) -> dict[str, str]:
    """The parent's flags become the children's LLMOPS_* variables (flags > env, so nothing is lost).

    The broker kind travels too: the children get a bootstrap address even when it is the embedded Tansu, and
    an address alone would make them choose Apache Kafka's consumer timeouts.
    """
    env = dict(os.environ)
    for dotted, value in overrides.items():
        env["LLMOPS_" + "__".join(part.upper() for part in dotted.split("."))] = str(value)
    env["LLMOPS_KAFKA__BOOTSTRAP"] = bootstrap
    env["LLMOPS_KAFKA__BROKER_KIND"] = broker_kind
    return env


def spawn_component(
    command: str, env: dict[str, str], config_file: Path | None, *, guarded: bool = False
) -> subprocess.Popen[str]:
    """`guarded`: the child dies with this process and ignores SIGTERM (llmops.child_guard); stop it with SIGINT."""
    argv = [sys.executable, "-m", "llmops"] + (["--config", str(config_file)] if config_file else []) + [command]
    # A session of its own: Ctrl-C reaches only the supervisor, which stops children in order.
    return subprocess.Popen(
        guarded_argv(argv) if guarded else argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=None,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            # Keep reading the child's stdout so a full pipe never blocks it.
            threading.Thread(target=_discard, args=(proc.stdout,), daemon=True).start()
            return line.strip()
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"child did not report '{prefix}' (exit code {proc.poll()})")


def _discard(stream: Any) -> None:
    for _ in stream:
        pass


def _wait_until(check: Any, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_stack(
    settings: Settings,
    overrides: dict[str, Any],
    *,
    config_file: Path | None,
    demo: bool,
    demo_rate: float,
    live_interval: float = 2.0,
) -> int:
    from llmops import stack_state
    from llmops.live import LiveView, closing_note
    from llmops.preflight import preflight

    lock = preflight(settings)  # before any child or banner: a port in use or a locked data dir is one line
    stop = threading.Event()
    # SIGHUP too: a closed terminal then stops the stack in order instead of killing the supervisor mid-way.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    broker = None
    supervisor = None
    demo_thread = None
    view = None
    exit_code = 0
    try:
        bootstrap = settings.kafka.bootstrap
        if not bootstrap:
            broker = EmbeddedBroker("127.0.0.1", guarded=True).start()
            bootstrap = broker.bootstrap
        ensure_topics(bootstrap, settings.kafka)
        env = child_env(overrides, bootstrap, settings.kafka.kind)
        worker = Child("worker", lambda: spawn_component("worker", env, config_file, guarded=True))
        receiver = Child("receiver", lambda: spawn_component("receive", env, config_file, guarded=True))
        supervisor = Supervisor(
            broker,
            worker,
            receiver,
            lambda: consumer_lag(bootstrap, settings.kafka.group_id, settings.kafka.topic),
            broker_max_rss_mib=settings.kafka.embedded_max_rss_mib,
            create_topics=lambda: ensure_topics(bootstrap, settings.kafka),
        )
        worker_proc = worker.start()
        host = local_host(settings.receiver.listen)
        if settings.embedded_store and settings.sql.enabled:
            _wait_until(
                lambda: endpoint_alive(host, settings.sql.port, tls_ca=settings.sql.tls_cert_file),
                120,
                "the worker's SQL endpoint",
                worker_proc,
            )
        ready = wait_for_line(receiver.start(), "receiver ready", 60)
        stack_state.publish(settings, bootstrap, host)  # before the banner: whoever reads the banner finds the file
        print(f"llmops up: kafka={bootstrap} store={settings.clickhouse_dsn}", flush=True)
        print(
            f"  OTLP gRPC {host}:{settings.receiver.grpc_port}  "
            f"OTLP HTTP http://{host}:{settings.receiver.http_port}/v1/traces  ({ready})"
        )
        if settings.embedded_store:
            scheme = "https" if settings.sql.tls_cert_file else "http"
            print(
                f"  SQL (read-only ClickHouse HTTP) {scheme}://{host}:{settings.sql.port}/?query=SELECT+count()+FROM+llmops.otel_traces"
            )
        print("  Ctrl-C to stop.", flush=True)
        if demo:
            from llmops.demo import DemoTraffic

            demo_thread = DemoTraffic(settings, host, demo_rate, stop)
            demo_thread.start()
        view = LiveView(settings, stop, live_interval)
        view.start()
        while not stop.wait(0.5):
            if (fatal := supervisor.check()) is not None:
                log.error("%s; stopping the stack", fatal)
                exit_code = 1
                break
    except Exception as exc:
        log.debug("llmops up failed", exc_info=exc)
        print(f"llmops up: {exc}; --log-level DEBUG shows more", file=sys.stderr)
        exit_code = 1
    finally:
        stop.set()
        if view is not None:
            view.join(timeout=10)
        if demo_thread is not None:
            demo_thread.join(timeout=30)
        if supervisor is not None:
            supervisor.shutdown()
        elif broker is not None:
            broker.stop()
        stack_state.remove_state(settings.data_dir, os.getpid())
        lock.release()
    print(closing_note(settings), flush=True)
    return exit_code
