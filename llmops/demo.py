"""`llmops up --demo`: steady demo traffic (the live view, llmops.live, shows what the store made of it)."""

from __future__ import annotations

import logging
import threading
import time

from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen

__all__ = ["DemoTraffic"]

log = logging.getLogger(__name__)


class DemoTraffic(threading.Thread):
    def __init__(self, settings: Settings, host: str, rate: float, stop: threading.Event, chunk_s: float = 2.0) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self._settings = settings
        self._endpoint = f"http://{host}:{settings.receiver.http_port}"
        self._rate = rate
        self._halt = stop
        self._chunk_s = chunk_s

    def run(self) -> None:
        seed = 0
        while not self._halt.is_set():
            try:
                run_loadgen(
                    LoadgenOptions(
                        endpoint=self._endpoint,
                        rate=self._rate,
                        duration_s=self._chunk_s,
                        seed=seed,
                        start_ns=time.time_ns(),
                    )
                )
            except Exception as exc:  # demo traffic is best effort; the stack keeps running
                log.warning("demo traffic failed: %s", exc)
                self._halt.wait(2)
            seed += 1
