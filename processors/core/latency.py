"""Latency stage logic: LLM calls -> partial rows of ``llm_latency_1m``; TTFT read from a span.

Pure functions, no I/O. ``LATENCY`` is the worker's signal (processors/core/signal.py): it folds a
source's calls of a batch into arrays and makes the rows in numpy passes. ``latency_rows`` gives
the same rows as a ``LatencyRows`` block, for
``client.insert("llm_latency_1m", rows.column_data(), column_names=rows.column_names, column_oriented=True)``
(the sink adds ``_ingest_source`` / ``_ingest_offset``).

Windows: 1-minute tumbling windows on event time (``LLMCall.ts_ns``, the span start),
``window_start`` = the UTC minute it falls in. Key: service, environment, provider, model
(response model, else requested), request_model (requested, else response model), operation.
Latency is a reliability question, so panels and alerts group by ``request_model``: a timeout
has no response model and would otherwise sit on another row than the request's successes.
Metrics, one row each per window and key:

- ``ttft_ms``: time to first token, streamed calls only (``ttft_ms is not None``);
- ``duration_ms``: every call;
- ``tpot_ms``: time per output token, ``(duration_ms - ttft_ms) / output_tokens``, streamed
  calls with ``output_tokens > 0``.

A batch yields partial rows; several partials of one window and key (late data, other
batches, other workers) are normal and merge in SQL: ``sum(count)``, ``min(min)``,
``max(max)``, ``sumMap(sketch)`` read by ``sketch_quantile`` (migration 003).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processors.core.bounds import MAX_TTFT_S, BadValue, number, show, time_in_range
from processors.core.records import AttrValue, LLMCall, SpanView
from processors.core.signal import ColumnSpec, Merge, TableSpec
from processors.core.sketch import DEFAULT_RELATIVE_ACCURACY, GroupedSketches
from processors.core.tables import TableRows
from processors.core.window import MINUTE, Window

__all__ = [
    "METRIC_TTFT",
    "METRIC_DURATION",
    "METRIC_TPOT",
    "KEY_COLUMNS",
    "LATENCY_COLUMNS",
    "ROW_QUANTILES",
    "TTFT_ATTRIBUTE",
    "FIRST_CHUNK_EVENTS",
    "LATENCY",
    "LATENCY_TABLE",
    "LatencyInput",
    "LatencyRows",
    "LatencySignal",
    "window_start_s",
    "metric_rows",
    "latency_rows",
    "ttft_ms_from_span",
]

METRIC_TTFT = "ttft_ms"
METRIC_DURATION = "duration_ms"
METRIC_TPOT = "tpot_ms"

KEY_COLUMNS: tuple[str, ...] = ("service", "environment", "provider", "model", "request_model", "operation")
ROW_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)
LATENCY_COLUMNS: tuple[str, ...] = (
    "window_start",
    *KEY_COLUMNS,
    "metric",
    "count",
    "sum",
    "min",
    "max",
    "p50",
    "p90",
    "p95",
    "p99",
    "nonpositive_count",
    "sketch_gamma",
    "sketch",
)

# How partial rows of one key merge (migration 003: readers take sum, min, max, sumMap of the
# sketch; the quantile columns describe their own row only).
_MERGE: dict[str, Merge] = {
    "window_start": "key",
    **dict.fromkeys(KEY_COLUMNS, "key"),
    "metric": "key",
    "count": "sum",
    "sum": "sum",
    "min": "min",
    "max": "max",
    "p50": "partial",
    "p90": "partial",
    "p95": "partial",
    "p99": "partial",
    "nonpositive_count": "sum",
    "sketch_gamma": "any",
    "sketch": "sum_map",
}
LATENCY_TABLE = TableSpec("llm_latency_1m", tuple(ColumnSpec(name, _MERGE[name]) for name in LATENCY_COLUMNS))

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# OTel GenAI semconv (experimental): seconds from request to first chunk of a streamed response.
TTFT_ATTRIBUTE = "gen_ai.response.time_to_first_chunk"
# Span events whose earliest timestamp marks the first streamed chunk:
# OpenLLMetry (current name, then the legacy one) and OpenInference.
FIRST_CHUNK_EVENTS: frozenset[str] = frozenset(
    {"gen_ai.content.completion.chunk", "llm.content.completion.chunk", "First Token Stream Event"}
)


Column = Sequence[Any] | NDArray[Any]  # a list, or a numpy array where the values come from numpy


@dataclass(frozen=True, slots=True)
class LatencyRows:
    """Columnar rows for ``llm_latency_1m``: column name -> list or numpy array, same length each."""

    columns: dict[str, Column]
    column_names: tuple[str, ...] = field(default=LATENCY_COLUMNS)

    def __len__(self) -> int:
        return len(self.columns[self.column_names[0]])

    def column_data(self) -> list[Column]:
        """Columns in ``column_names`` order, for ``client.insert(..., column_oriented=True)``."""
        return [self.columns[name] for name in self.column_names]

    @classmethod
    def empty(cls) -> LatencyRows:
        return cls({name: [] for name in LATENCY_COLUMNS})

    @classmethod
    def concat(cls, parts: Sequence[LatencyRows]) -> LatencyRows:
        """One block from several, column by column (numpy columns stay numpy)."""
        nonempty = [p for p in parts if len(p)]
        if not nonempty:
            return cls.empty()
        out: dict[str, Column] = {}
        for name in LATENCY_COLUMNS:
            cols = [p.columns[name] for p in nonempty]
            if all(isinstance(c, np.ndarray) for c in cols):
                out[name] = np.concatenate(cols)
            else:
                out[name] = [x for c in cols for x in c]
        return cls(out)


def window_start_s(ts_ns: ArrayLike) -> NDArray[np.int64]:
    """Start of the UTC minute of each Unix-ns timestamp, in Unix seconds (floors negatives too)."""
    return MINUTE.starts_s(ts_ns)


def _utc(seconds: NDArray[np.int64]) -> list[datetime]:
    cache = {s: datetime.fromtimestamp(s, tz=UTC) for s in np.unique(seconds).tolist()}
    return [cache[s] for s in seconds.tolist()]


def metric_rows(
    window_starts: ArrayLike,
    key_ids: ArrayLike,
    keys: Sequence[tuple[str, ...]],
    metric: str,
    values: ArrayLike,
    relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
) -> LatencyRows:
    """Rows of one metric: value i belongs to window ``window_starts[i]`` (Unix s) and key ``keys[key_ids[i]]``.

    The array-level entry point (no per-value Python): ``latency_rows`` and the benchmark use it.
    Not finite or ``<= 0`` values count in ``count`` and ``nonpositive_count`` only;
    ``sum``/``min``/``max`` cover the finite values; p50..p99 come from the sketch, clamped
    into [min, max].
    """
    w = np.asarray(window_starts, dtype=np.int64).ravel()
    k = np.asarray(key_ids, dtype=np.int64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if not (w.size == k.size == v.size):
        raise ValueError("window_starts, key_ids and values differ in length")
    if v.size == 0:
        return LatencyRows.empty()
    if int(k.min()) < 0 or int(k.max()) >= len(keys):
        raise ValueError("key_ids must index keys")
    windows, w_inv = np.unique(w, return_inverse=True)
    groups, g = np.unique(w_inv * len(keys) + k, return_inverse=True)
    n = groups.size

    sketches = GroupedSketches.from_batch(g, v, n, relative_accuracy)
    finite = np.isfinite(v)
    fg, fv = g[finite], v[finite]
    mins = np.full(n, np.nan)
    maxs = np.full(n, np.nan)
    if fv.size:
        order = np.argsort(fg, kind="stable")
        fg, fv = fg[order], fv[order]
        starts = np.flatnonzero(np.concatenate(([True], fg[1:] != fg[:-1])))
        mins[fg[starts]] = np.minimum.reduceat(fv, starts)
        maxs[fg[starts]] = np.maximum.reduceat(fv, starts)
    quantiles = np.clip(sketches.quantiles(ROW_QUANTILES), mins[:, None], maxs[:, None])

    key_of_row = (groups % len(keys)).tolist()
    columns: dict[str, Column] = {"window_start": _utc(windows[groups // len(keys)])}
    for i, name in enumerate(KEY_COLUMNS):
        columns[name] = [keys[r][i] for r in key_of_row]
    columns["metric"] = [metric] * n
    columns["count"] = np.bincount(g, minlength=n).astype(np.uint64)
    columns["sum"] = np.bincount(fg, weights=fv, minlength=n)
    columns["min"] = mins
    columns["max"] = maxs
    for j, name in enumerate(("p50", "p90", "p95", "p99")):
        columns[name] = np.ascontiguousarray(quantiles[:, j])
    columns["nonpositive_count"] = sketches.nonpositive_counts
    columns["sketch_gamma"] = np.full(n, sketches.gamma)
    columns["sketch"] = sketches.to_maps()
    return LatencyRows(columns)


@dataclass(slots=True)
class LatencyInput:
    """A source's calls as arrays (what the rows read of them), and the dimension keys they index."""

    keys: dict[tuple[str, ...], int] = field(default_factory=dict)  # key -> its index in `key_ids`
    # One per fold: (window start, key id, duration, streamed, ttft, output tokens).
    chunks: list[tuple[NDArray[Any], ...]] = field(default_factory=list)


class LatencySignal:
    """The ``llm_latency_1m`` signal (processors/core/signal.py): per 1-minute window, key and metric,
    count, sum, min, max and a sketch."""

    table = LATENCY_TABLE

    def __init__(self, window: Window = MINUTE, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        self.window = window
        self.relative_accuracy = relative_accuracy

    def new(self) -> LatencyInput:
        return LatencyInput()

    def fold(self, acc: LatencyInput, calls: Sequence[LLMCall]) -> LatencyInput:
        n = len(calls)
        if not n:
            return acc
        key_index = acc.keys
        key_ids = np.fromiter(
            (
                key_index.setdefault(
                    (c.service, c.environment, c.provider, c.model, c.request_model or c.response_model, c.operation),
                    len(key_index),
                )
                for c in calls
            ),
            dtype=np.int64,
            count=n,
        )
        acc.chunks.append(
            (
                self.window.starts_s(np.fromiter((c.ts_ns for c in calls), dtype=np.int64, count=n)),
                key_ids,
                np.fromiter((c.duration_ms for c in calls), dtype=np.float64, count=n),
                np.fromiter((c.ttft_ms is not None for c in calls), dtype=np.bool_, count=n),
                np.fromiter((0.0 if c.ttft_ms is None else c.ttft_ms for c in calls), dtype=np.float64, count=n),
                np.fromiter((c.output_tokens for c in calls), dtype=np.int64, count=n),
            )
        )
        return acc

    def block(self, acc: LatencyInput) -> LatencyRows:
        """The rows as a ``LatencyRows`` block: metric, then window, then key order."""
        if not acc.chunks:
            return LatencyRows.empty()
        chunks = acc.chunks
        windows, key_ids, duration, streamed, ttft, output_tokens = (
            chunks[0] if len(chunks) == 1 else tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))
        )
        keys = list(acc.keys)
        accuracy = self.relative_accuracy
        has_tokens = streamed & (output_tokens > 0)
        tpot = (duration[has_tokens] - ttft[has_tokens]) / output_tokens[has_tokens]
        return LatencyRows.concat(
            [
                metric_rows(windows[streamed], key_ids[streamed], keys, METRIC_TTFT, ttft[streamed], accuracy),
                metric_rows(windows, key_ids, keys, METRIC_DURATION, duration, accuracy),
                metric_rows(windows[has_tokens], key_ids[has_tokens], keys, METRIC_TPOT, tpot, accuracy),
            ]
        )

    def rows(self, acc: LatencyInput) -> TableRows:
        block = self.block(acc)
        return TableRows(LATENCY_TABLE.name, list(block.column_names), [list(column) for column in block.column_data()])


LATENCY = LatencySignal()


def latency_rows(calls: Iterable[LLMCall], relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> LatencyRows:
    """Partial ``llm_latency_1m`` rows for one batch of calls: metric, then window, then key order."""
    signal = LATENCY
    if relative_accuracy != signal.relative_accuracy:
        signal = LatencySignal(relative_accuracy=relative_accuracy)
    return signal.block(signal.fold(signal.new(), list(calls)))


def _seconds(value: AttrValue) -> float:
    """Seconds to first token from an int/float/numeric-string attribute, within ±`MAX_TTFT_S`."""
    return number(value, -MAX_TTFT_S, MAX_TTFT_S, TTFT_ATTRIBUTE)


_MAX_ISO_CHARS = 64  # "2026-01-01T00:00:00.123456789+05:30" with quotes and spaces fits


def _timestamp_ns(value: AttrValue) -> int | None:
    """Unix ns from an integer/float ns value, a string of digits (ns), or an ISO 8601 string.

    ISO strings may end in ``Z`` or carry an offset; without one they are taken as UTC; a
    JSON-quoted string (``"\\"2026-01-01T00:00:00.5Z\\""``, as Langfuse SDKs write it) is unquoted.
    Precision of ISO strings is 1 µs (further digits are cut). None when unreadable; a result
    outside the event-time window (processors/core/bounds.py) is unreadable too.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        text = value.strip().strip('"') if len(value) <= _MAX_ISO_CHARS else ""
        if text.isdigit():
            value = int(text) if len(text) <= 20 else None
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = (parsed - _EPOCH) // _MICROSECOND * 1000
    if not isinstance(value, int) or not time_in_range(value):
        return None
    return value


def ttft_ms_from_span(
    span: SpanView, extra_attributes: Sequence[str] = (), problems: list[str] | None = None
) -> float | None:
    """Time to first token in ms, or None when the span shows no streaming.

    Precedence: (1) attribute ``gen_ai.response.time_to_first_chunk`` (seconds, within a day
    either way); (2) the earliest event named in ``FIRST_CHUNK_EVENTS`` minus the span start;
    (3) the first of ``extra_attributes`` holding a completion-start timestamp (see
    ``_timestamp_ns`` for accepted forms), minus the span start. A source that is present but
    unreadable or out of bounds (processors/core/bounds.py) falls through to the next, and its
    reason is appended to `problems`. Negative results (clock skew) are returned as they
    are: the latency rows count them in ``nonpositive_count``.
    """
    raw = span.attributes.get(TTFT_ATTRIBUTE)
    if raw is not None:
        try:
            return _seconds(raw) * 1000.0
        except BadValue as exc:
            if problems is not None:
                problems.append(f"{exc}: ttft_ms not read from it")
    chunk_times = [e.time_ns for e in span.events if e.name in FIRST_CHUNK_EVENTS and e.time_ns > 0]
    if chunk_times:
        first = min(chunk_times)
        if not time_in_range(first):  # the earliest is unusable: skip every time outside the window
            if problems is not None:
                problems.append(
                    f"first-chunk event time_unix_nano {show(first)} outside 2000-01-01..2200-01-01: "
                    "ttft_ms not read from it"
                )
            chunk_times = [t for t in chunk_times if time_in_range(t)]
            first = min(chunk_times) if chunk_times else 0
        if chunk_times:
            return (first - span.start_ns) / 1e6
    for name in extra_attributes:
        value = span.attributes.get(name)
        started = _timestamp_ns(value)
        if started is not None:
            return (started - span.start_ns) / 1e6
        if value is not None and problems is not None:
            problems.append(
                f"{name}: {show(value)} is no timestamp in 2000-01-01..2200-01-01: ttft_ms not read from it"
            )
    return None
