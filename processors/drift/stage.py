"""The drift stage as the agent drives it: feed the tracker, close windows, write rows.

State lives in the tracker (memory). A batch is acknowledged once its calls are
counted and offered to the samples, so a worker restart loses the windows still open (their
calls are counted in `calls_seen` and the loss is logged); closed windows are
in ClickHouse. Rows are written with a content token, so a retried insert is
not stored twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from threadpoolctl import threadpool_limits

from processors.core.drift.stream import DriftKey, DriftTracker
from processors.core.drift.wire import decode_payload
from processors.core.tables import TableRows
from sinks.clickhouse.writer import ClickHouseSink

__all__ = ["DriftStage"]

log = logging.getLogger(__name__)


class DriftStage:
    def __init__(self, tracker: DriftTracker, sink: ClickHouseSink) -> None:
        self.tracker = tracker
        self._sink = sink
        self._lock = asyncio.Lock()
        self.malformed = 0
        self._reported = (0, 0)  # (evicted keys, late calls) already logged

    async def consume(self, values: Sequence[bytes]) -> None:
        async with self._lock:
            # Off the event loop: a busy service's records take tens of milliseconds to count.
            await asyncio.to_thread(self._add, values)
        await self.flush()

    def _add(self, values: Sequence[bytes]) -> None:
        for value in values:
            try:
                record = decode_payload(value)
            except (ValueError, KeyError, TypeError) as exc:  # written by our own workers: a bug, not data
                self.malformed += 1
                log.error("undecodable drift record skipped: %s", exc)
                continue
            self.tracker.add(record.service, record.calls, record.tallies)
            if record.pin is not None:
                pin = record.pin
                key = DriftKey(record.service, pin["model"], pin["prompt_name"], pin["prompt_version"])
                if not self.tracker.pin(key):
                    log.warning("cannot pin %s: this worker has no closed window of it yet", key)

    def _close(self) -> tuple[TableRows, TableRows]:
        # One BLAS thread: the statistics are many small matrix products, and two OpenBLAS
        # threads on a loaded 2-core worker fight each other (815 ms vs 224 ms per window).
        with threadpool_limits(1):
            return self.tracker.close()

    async def flush(self) -> None:
        """Close what the watermark passed; write drift rows and change events."""
        async with self._lock:
            drift_rows, change_rows = await asyncio.to_thread(self._close)
            for rows in (change_rows, drift_rows):
                if len(rows):
                    await asyncio.to_thread(self._sink.write, rows, rows.token())
            self._report_losses()

    def _report_losses(self) -> None:
        """Evicted keys and late calls are counted; say so whenever the counts grow."""
        counts = (self.tracker.evicted_keys, self.tracker.late_calls)
        if counts != self._reported:
            log.warning(
                "drift stage dropped state or calls",
                extra={
                    "evicted_keys_total": counts[0],
                    "late_calls_total": counts[1],
                    "live_keys": self.tracker.live_keys,
                    "max_keys": self.tracker.config.max_keys,
                },
            )
            self._reported = counts
