"""`llmops up --demo`: steady demo traffic plus a live summary read back from the store."""

from __future__ import annotations

import logging
import sys
import threading
import time

from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen
from llmops.store import open_reader

__all__ = ["DemoTraffic", "SUMMARY_QUERY", "summary_line"]

log = logging.getLogger(__name__)

# Grouped by the REQUESTED model (else the response model): a failed call usually has no response
# model, so by billed model its failure would sit on another line than the request's successes.
SUMMARY_QUERY = """
SELECT if(request_model = '', response_model, request_model) AS requested_model, count() AS calls,
       countIf(status = 'error') AS errors, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM llm_calls GROUP BY requested_model ORDER BY calls DESC LIMIT 8
"""


def summary_line(model: str, calls: int, errors: int, input_tokens: int, output_tokens: int) -> str:
    """One live-summary line: calls and failed share of one requested model, and its tokens."""
    rate = f"{errors / calls:.1%}" if calls else "—"
    return (f"  {model or '?':<34} calls {calls:>7,}  errors {errors:>5,} ({rate:>6})  "
            f"tokens in {input_tokens:>12,} out {output_tokens:>10,}")


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
                rows = reader.query(SUMMARY_QUERY).result_rows
            except Exception as exc:
                log.warning("live summary unavailable: %s", exc)
                continue
            now = time.monotonic()
            rate = (spans - last_spans) / (now - last_t)
            last_spans, last_t = spans, now
            lines = [f"\n[{time.strftime('%H:%M:%S')}] spans stored {spans:,} ({rate:,.0f}/s), ingest errors {errors}"]
            lines += [summary_line(m, c, e, i, o) for m, c, e, i, o in rows]
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
