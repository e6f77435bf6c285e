"""Additive usage and cost partials per 1-minute event-time window and key (`llm_usage_1m`).

Why partials: a batch of calls (including late ones) becomes one row per
(window, key) holding sums only. Any number of rows for the same window and
key add up to the same totals, whatever the arrival order or batch split, so
late spans land as one more row and a restart that replays nothing already
stored (the sink's offset fence) never counts twice. Readers sum (the
`llm_usage_totals` view does it). Cost sums are exact Decimals; unpriced
calls (cost None, failed ones included) are counted in `unpriced_calls` with
their tokens in `unpriced_input_tokens` / `unpriced_output_tokens`, and
contribute nothing to `cost`.

The key holds both models: `model` is the billed one (response model, else the
requested one) that cost groups by, `request_model` what the caller asked for,
(else the response model), which reliability groups by: a failed call usually has no response model, so
its failure would otherwise land on another row than the same request's
successes (docs/dashboards.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, NamedTuple

from processors.core.records import LLMCall
from processors.core.signal import ColumnSpec, TableSpec, signal_rows
from processors.core.tables import TableRows
from processors.core.window import MINUTE, Window

__all__ = [
    "USAGE",
    "USAGE_TABLE",
    "USAGE_KEY_COLUMNS",
    "USAGE_VALUE_COLUMNS",
    "USAGE_COLUMNS",
    "UsageKey",
    "UsagePartial",
    "UsageSignal",
    "usage_partials",
    "usage_rows",
    "usage_columns",
]

USAGE_TABLE: Final = "llm_usage_1m"
_ZERO: Final = Decimal(0).scaleb(-12)


class UsageKey(NamedTuple):
    """One row's key: window start (Unix seconds, UTC) and the attribution dimensions."""

    window_start: int
    service: str
    environment: str
    team: str
    provider: str
    model: str
    request_model: str
    operation: str
    agent: str
    prompt_name: str
    prompt_version: str


@dataclass(slots=True)
class UsagePartial:
    """Additive sums for one key; `merge` is associative and commutative."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    priced_calls: int = 0
    unpriced_calls: int = 0
    unpriced_input_tokens: int = 0
    unpriced_output_tokens: int = 0
    cost: Decimal = _ZERO
    reported_cost_calls: int = 0
    reported_cost: Decimal = _ZERO

    def add(self, call: LLMCall) -> None:
        self.calls += 1
        if call.status == "error":
            self.errors += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cache_read_tokens += call.cache_read_tokens
        self.cache_write_tokens += call.cache_write_tokens
        self.reasoning_tokens += call.reasoning_tokens
        if call.cost is None:
            self.unpriced_calls += 1
            self.unpriced_input_tokens += call.input_tokens
            self.unpriced_output_tokens += call.output_tokens
        else:
            self.priced_calls += 1
            self.cost += call.cost
        if call.reported_cost is not None:
            self.reported_cost_calls += 1
            self.reported_cost += call.reported_cost


_INT_FIELDS: Final = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "priced_calls",
    "unpriced_calls",
    "unpriced_input_tokens",
    "unpriced_output_tokens",
    "reported_cost_calls",
)

USAGE_KEY_COLUMNS: Final = UsageKey._fields
USAGE_VALUE_COLUMNS: Final = (*_INT_FIELDS[:11], "cost", "reported_cost_calls", "reported_cost")
# Column order of llm_usage_1m without the sink's delivery columns (_ingest_source, _ingest_offset).
USAGE_COLUMNS: Final = (*USAGE_KEY_COLUMNS, *USAGE_VALUE_COLUMNS)


class UsageSignal:
    """The `llm_usage_1m` signal (processors/core/signal.py): one `UsagePartial` per 1-minute window and key."""

    table: Final = TableSpec(
        USAGE_TABLE,
        tuple(ColumnSpec(name, "key") for name in USAGE_KEY_COLUMNS)
        + tuple(ColumnSpec(name, "sum") for name in USAGE_VALUE_COLUMNS),
    )

    def __init__(self, window: Window = MINUTE) -> None:
        self.window = window

    def new(self) -> dict[UsageKey, UsagePartial]:
        return {}

    def fold(self, acc: dict[UsageKey, UsagePartial], calls: Iterable[LLMCall]) -> dict[UsageKey, UsagePartial]:
        start_s = self.window.start_s
        for call in calls:
            key = UsageKey(
                start_s(call.ts_ns),
                call.service,
                call.environment,
                call.team,
                call.provider,
                call.response_model or call.request_model,
                call.request_model or call.response_model,
                call.operation,
                call.agent,
                call.prompt_name,
                call.prompt_version,
            )
            partial = acc.get(key)
            if partial is None:
                partial = acc[key] = UsagePartial()
            partial.add(call)
        return acc

    def rows(self, acc: dict[UsageKey, UsagePartial]) -> TableRows:
        data = _columns(acc)
        return TableRows(USAGE_TABLE, list(USAGE_COLUMNS), [data[name] for name in USAGE_COLUMNS])


USAGE: Final = UsageSignal()


def usage_partials(calls: Iterable[LLMCall]) -> dict[UsageKey, UsagePartial]:
    """Sum calls per (window, key)."""
    return USAGE.fold(USAGE.new(), calls)


def _columns(partials: dict[UsageKey, UsagePartial]) -> dict[str, list]:
    data: dict[str, list] = {name: [] for name in USAGE_COLUMNS}
    key_lists = [data[name] for name in USAGE_KEY_COLUMNS]
    value_lists = [data[name] for name in USAGE_VALUE_COLUMNS]
    for key, partial in partials.items():
        for column, value in zip(key_lists, key, strict=True):
            column.append(value)
        for column, name in zip(value_lists, USAGE_VALUE_COLUMNS, strict=True):
            column.append(getattr(partial, name))
    return data


def usage_columns(calls: Sequence[LLMCall]) -> tuple[dict[str, list], list[str]]:
    """Columnar partial rows: {column: values} and the column order for
    `client.insert(table, data, column_names=..., column_oriented=True)`."""
    return _columns(usage_partials(calls)), list(USAGE_COLUMNS)


def usage_rows(calls: Sequence[LLMCall]) -> TableRows:
    """llm_usage_1m rows of `calls` (the caller adds the delivery columns)."""
    return signal_rows(USAGE, calls)
