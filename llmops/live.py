"""The live view of `llmops up`: what the pipeline is doing right now, read back from the store.

Every interval one snapshot is read through the same reader `llmops report`
uses (so it shows what is stored, not what was sent): spans/s and calls/s,
cost in the last minute and today (UTC, exact decimals), the top models by
cost today, TTFT p95 over the last five minutes (merged latency sketches),
the error rate, unpriced calls, drifted keys and ingest errors, and calls and
errors per requested model (where a failed call, which has no response
model, belongs). On a terminal
it redraws in place with rich's Live; otherwise (a pipe, a log file) it
prints one line per interval.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmops.config import Settings

__all__ = [
    "Snapshot",
    "read_snapshot",
    "render",
    "plain_line",
    "closing_note",
    "LiveView",
    "SUMMARY_QUERY",
    "summary_line",
]

log = logging.getLogger(__name__)

_TOTALS = """
SELECT
    (SELECT count() FROM otel_traces) AS spans,
    (SELECT count() FROM llm_calls) AS calls,
    (SELECT count() FROM llm_calls WHERE ts >= now() - INTERVAL 5 MINUTE) AS calls_5m,
    (SELECT countIf(status = 'error') FROM llm_calls WHERE ts >= now() - INTERVAL 5 MINUTE) AS errors_5m,
    (SELECT toString(sum(cost)) FROM llm_calls WHERE ts >= now() - INTERVAL 1 MINUTE) AS cost_last_minute,
    (SELECT toString(sum(cost)) FROM llm_calls WHERE ts >= toStartOfDay(now())) AS cost_today,
    (SELECT countIf(cost IS NULL AND status = 'ok') FROM llm_calls) AS unpriced_calls,
    (SELECT uniqExact(service, model, prompt_name, prompt_version) FROM llm_drift WHERE drifted) AS drifted_keys,
    (SELECT count() FROM ingest_errors) AS ingest_errors,
    (SELECT sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.95) FROM llm_latency_1m
       WHERE window_start >= now() - INTERVAL 5 MINUTE HAVING sumIf(count, metric = 'ttft_ms') > 0) AS ttft_p95_ms
"""
_TOP_MODELS = """
SELECT model, toString(sum(cost)) AS cost_usd, count() AS calls
FROM llm_calls WHERE ts >= toStartOfDay(now())
GROUP BY model ORDER BY sum(cost) DESC NULLS LAST, calls DESC, model LIMIT 5
"""

# Grouped by the REQUESTED model (else the response model): a failed call usually has no response
# model, so by billed model its failure would sit on another line than the request's successes.
SUMMARY_QUERY = """
SELECT if(request_model = '', response_model, request_model) AS requested_model, count() AS calls,
       countIf(status = 'error') AS errors, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
FROM llm_calls GROUP BY requested_model ORDER BY calls DESC LIMIT 8
"""


def summary_line(model: str, calls: int, errors: int, input_tokens: int, output_tokens: int) -> str:
    """One line per requested model: calls and failed share, and its tokens."""
    rate = f"{errors / calls:.1%}" if calls else "—"
    return (
        f"  {model or '?':<34} calls {calls:>7,}  errors {errors:>5,} ({rate:>6})  "
        f"tokens in {input_tokens:>12,} out {output_tokens:>10,}"
    )


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic() of the read, for rates
    spans: int
    calls: int
    calls_5m: int
    errors_5m: int
    cost_last_minute: Decimal
    cost_today: Decimal
    unpriced_calls: int
    drifted_keys: int
    ingest_errors: int
    ttft_p95_ms: float | None
    top_models: list[tuple[str, Decimal | None, int]] = field(default_factory=list)
    by_requested_model: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # SUMMARY_QUERY rows
    spans_per_s: float = 0.0
    calls_per_s: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors_5m / self.calls_5m if self.calls_5m else 0.0


def _decimal(text: Any) -> Decimal:
    return Decimal(str(text)) if text not in (None, "") else Decimal(0)


def read_snapshot(client: Any, previous: Snapshot | None = None) -> Snapshot:
    """One consistent-enough read of the store; rates are the difference to `previous`."""
    result = client.query(_TOTALS)
    row = dict(zip(result.column_names, result.result_rows[0], strict=True))
    top = [
        (m or "?", None if c is None else Decimal(str(c)), int(n)) for m, c, n in client.query(_TOP_MODELS).result_rows
    ]
    requested = [(m, int(c), int(e), int(i), int(o)) for m, c, e, i, o in client.query(SUMMARY_QUERY).result_rows]
    now = time.monotonic()
    ttft = row["ttft_p95_ms"]
    snapshot = Snapshot(
        at=now,
        spans=int(row["spans"]),
        calls=int(row["calls"]),
        calls_5m=int(row["calls_5m"]),
        errors_5m=int(row["errors_5m"]),
        cost_last_minute=_decimal(row["cost_last_minute"]),
        cost_today=_decimal(row["cost_today"]),
        unpriced_calls=int(row["unpriced_calls"]),
        drifted_keys=int(row["drifted_keys"]),
        ingest_errors=int(row["ingest_errors"]),
        ttft_p95_ms=None if ttft is None else float(ttft),
        top_models=top,
        by_requested_model=requested,
    )
    if previous is not None and now > previous.at:
        elapsed = now - previous.at
        snapshot = _with_rates(
            snapshot, (snapshot.spans - previous.spans) / elapsed, (snapshot.calls - previous.calls) / elapsed
        )
    return snapshot


def _with_rates(snapshot: Snapshot, spans_per_s: float, calls_per_s: float) -> Snapshot:
    from dataclasses import replace

    return replace(snapshot, spans_per_s=max(spans_per_s, 0.0), calls_per_s=max(calls_per_s, 0.0))


def _usd(value: Decimal | None) -> str:
    return "—" if value is None else f"${value:,.4f}"


def _ttft(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def render(snapshot: Snapshot, title: str = "llmops up") -> Group:
    """The terminal view: a key figures table and the top models by cost today."""
    figures = Table.grid(padding=(0, 3))
    for _ in range(4):
        figures.add_column()
    figures.add_row(
        Text("spans/s", style="dim"),
        f"{snapshot.spans_per_s:,.0f}",
        Text("calls/s", style="dim"),
        f"{snapshot.calls_per_s:,.1f}",
    )
    figures.add_row(
        Text("cost last minute", style="dim"),
        _usd(snapshot.cost_last_minute),
        Text("cost today (UTC)", style="dim"),
        _usd(snapshot.cost_today),
    )
    figures.add_row(
        Text("TTFT p95 (5 min)", style="dim"),
        _ttft(snapshot.ttft_p95_ms),
        Text("error rate (5 min)", style="dim"),
        f"{snapshot.error_rate:.1%}",
    )
    figures.add_row(
        Text("unpriced calls", style="dim"),
        Text(f"{snapshot.unpriced_calls:,}", style="yellow" if snapshot.unpriced_calls else ""),
        Text("drifted keys", style="dim"),
        Text(f"{snapshot.drifted_keys:,}", style="red" if snapshot.drifted_keys else ""),
    )
    figures.add_row(
        Text("ingest errors", style="dim"),
        Text(f"{snapshot.ingest_errors:,}", style="red" if snapshot.ingest_errors else ""),
        Text("stored", style="dim"),
        f"{snapshot.spans:,} spans, {snapshot.calls:,} calls",
    )
    models = Table(title="top models by cost today", title_justify="left", box=None, pad_edge=False)
    models.add_column("model")
    models.add_column("cost", justify="right")
    models.add_column("calls", justify="right")
    for model, cost, calls in snapshot.top_models:
        models.add_row(model, _usd(cost), f"{calls:,}")
    if not snapshot.top_models:
        models.add_row("(no calls today yet)", "", "")
    requested = Text("calls and errors by requested model", style="italic")
    for row in snapshot.by_requested_model:
        requested.append("\n" + summary_line(*row))
    stamp = Text(f"{title} · {time.strftime('%H:%M:%S')} · Ctrl-C to stop", style="bold")
    return Group(stamp, figures, Text(""), models, Text(""), requested)


def plain_line(snapshot: Snapshot) -> str:
    """The same figures on one line, for a pipe or a log file."""
    top = ", ".join(f"{m} {_usd(c)}" for m, c, _ in snapshot.top_models[:3]) or "-"
    return (
        f"[{time.strftime('%H:%M:%S')}] spans/s={snapshot.spans_per_s:.0f} calls/s={snapshot.calls_per_s:.1f} "
        f"cost_last_min={_usd(snapshot.cost_last_minute)} cost_today={_usd(snapshot.cost_today)} "
        f"ttft_p95={_ttft(snapshot.ttft_p95_ms)} error_rate={snapshot.error_rate:.1%} "
        f"unpriced={snapshot.unpriced_calls} drifted_keys={snapshot.drifted_keys} "
        f"ingest_errors={snapshot.ingest_errors} top=[{top}]"
    )


def closing_note(settings: Settings) -> str:
    """What `up` prints when it stops: where the data is and how to read it."""
    if not settings.embedded_store:
        return f"llmops up stopped. The data is in ClickHouse database {settings.clickhouse.database} (--clickhouse)."
    flag = (
        ""
        if settings.data_dir == type(settings).model_fields["data_dir"].default
        else f" --data-dir {settings.data_dir}"
    )
    return (
        f"llmops up stopped. The data is in {settings.data_dir.resolve()} (embedded ClickHouse). Read it with:\n"
        f"  llmops report{flag}\n"
        f'  llmops sql{flag} "SELECT model, sum(cost) FROM llm_calls GROUP BY model"\n'
        f"  llmops up{flag}   # serves it again, also to Grafana (docs/dashboards.md)"
    )


class LiveView(threading.Thread):
    """Refresh the view every `interval_s` until `stop` is set; a failed read is retried at the next tick."""

    def __init__(
        self, settings: Settings, stop: threading.Event, interval_s: float = 2.0, out: TextIO | None = None
    ) -> None:
        super().__init__(name="live-view", daemon=True)
        self._settings = settings
        self._halt = stop
        self._interval_s = interval_s
        self._out = out or sys.stdout

    def run(self) -> None:
        from llmops.store import close_reader, open_reader

        reader = None
        previous: Snapshot | None = None
        failing = ""
        live = None
        if self._out.isatty():
            live = Live(Text("waiting for the first snapshot…"), console=Console(file=self._out), auto_refresh=False)
            live.start()
        try:
            while True:
                try:
                    reader = reader or open_reader(self._settings)
                    previous = read_snapshot(reader, previous)
                except Exception as exc:  # the store may be busy or restarting; the next tick tries again
                    if str(exc) != failing:  # once per distinct failure, not once per tick
                        log.warning("live view: cannot read the store: %s", exc)
                        failing = str(exc)
                    if reader is not None:
                        close_reader(reader)
                    reader = None
                    if self._halt.wait(self._interval_s):
                        break
                    continue
                failing = ""
                if live is not None:
                    live.update(render(previous), refresh=True)
                else:
                    self._out.write(plain_line(previous) + "\n")
                    self._out.flush()
                if self._halt.wait(self._interval_s):
                    break
        finally:
            if live is not None:
                live.stop()
            if reader is not None:
                close_reader(reader)
