"""Stop a component a test or benchmark started with `llmops.stack.spawn_component` (`llmops up` stops its
children through llmops.supervisor instead)."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen[str] | None, timeout_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; a process that already exited is left alone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
