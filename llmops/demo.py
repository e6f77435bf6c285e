"""`llmops up --demo`: steady demo traffic plus a live summary read back from the store."""

from __future__ import annotations

import logging
import sys
import threading
import time

from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen
from llmops.store import open_reader

__all__ = ["DemoTraffic"]

log = logging.getLogger(__name__)

_SUMMARY = """
SELECT model, count() AS calls, countIf(status = 'error') AS errors,
       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM llm_calls GROUP BY model ORDER BY calls DESC LIMIT 8
"""


class DemoTraffic(threading.Thread):
    def __init__(self, settings: Settings, host: str, rate: float, stop: threading.Event, chunk_s: float = 2.0) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self._settings = settings
        self._endpoint = f"http://{host}:{settings.receiver.http_port}"
        self._rate = rate
        self._halt = stop
        self._chunk_s = chunk_s

    def run(self) -> None:
        printer = threading.Thread(target=self._print_summary, name="demo-summary", daemon=True)
        printer.start()
        seed = 0
        while not self._halt.is_set():
            try:
                run_loadgen(LoadgenOptions(endpoint=self._endpoint, rate=self._rate, duration_s=self._chunk_s, seed=seed,
                                           start_ns=time.time_ns()))  # fmt: skip
            except Exception as exc:  # demo traffic is best effort; the stack keeps running
                log.warning("demo traffic failed: %s", exc)
                self._halt.wait(2)
            seed += 1
        printer.join(timeout=5)

    def _print_summary(self) -> None:
        reader = None
        last_spans, last_t = 0, time.monotonic()
        while not self._halt.wait(3):
            try:
                reader = reader or open_reader(self._settings)
                spans = int(reader.query("SELECT count() FROM otel_traces").result_rows[0][0])
                errors = int(reader.query("SELECT count() FROM ingest_errors").result_rows[0][0])
                rows = reader.query(_SUMMARY).result_rows
            except Exception as exc:
                log.warning("live summary unavailable: %s", exc)
                continue
            now = time.monotonic()
            rate = (spans - last_spans) / (now - last_t)
            last_spans, last_t = spans, now
            lines = [f"\n[{time.strftime('%H:%M:%S')}] spans stored {spans:,} ({rate:,.0f}/s), ingest errors {errors}"]
            lines += [f"  {m or '?':<34} calls {c:>7,}  errors {e:>5,}  tokens in {i:>12,} out {o:>10,}" for m, c, e, i, o in rows]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
