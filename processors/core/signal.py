"""The contract of a per-window signal: LLM calls (or evaluation results) in, additive rows of one table out.

A signal (usage, latency, ...) turns the calls of a batch into partial rows of one ClickHouse
table, per event-time window and key. A signal whose class sets `input = "evaluations"` folds the
batch's evaluation results (`processors.core.evaluations.Evaluation`) instead, under the same rules.
The worker runs every registered signal (processors/core/registry.py) the same way, in `signal_rows`:

- called once per source (Kafka partition) per batch, on the calls of that source's records
  the table has not stored yet (offset above the table's fence);
- the caller tags every row with the source and the highest offset among those records: the
  sink's fence is max(_ingest_offset) per source, so a replay after a crash skips what is stored;
- rows must merge additively: any number of partial rows of one key, from any batch split,
  arrival order or worker, combine (by the table engine or by readers) into the totals of all
  their calls. Each value column declares how (`ColumnSpec.merge`), as the table's
  SimpleAggregateFunction types or its readers do;
- no I/O, no clock: a signal reads only the calls (event time is `LLMCall.ts_ns`, `Evaluation.ts_ns`).

The shape follows Bytewax's aggregators: `new()` an empty accumulator, `fold(acc, calls)` adds
calls, `rows(acc)` the table rows. `fold` takes a sequence (a source's calls of a batch), not one
call, so a signal may read it in numpy passes and the worker makes no call per call per signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar, get_args

from processors.core.tables import TableRows

__all__ = ["ColumnSpec", "Input", "Merge", "Signal", "TableSpec", "signal_input", "signal_rows"]

# How partial rows of one key combine: "key" columns identify the row; "sum", "min", "max" and
# "sum_map" (a Map whose values add per map key) are the additive ones; "any" must be equal on
# every row of a key (a parameter such as the sketch's gamma); "partial" describes its row only
# (a quantile of this partial) and readers recompute it from the merged columns.
Merge = Literal["key", "sum", "min", "max", "sum_map", "any", "partial"]
_MERGES = frozenset(get_args(Merge))


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    merge: Merge
    # The ClickHouse type of the column's values (`UInt64`, `LowCardinality(String)`, `DateTime('UTC')`):
    # given for every column, the sink creates the table from the spec (sinks/clickhouse/ddl.py); "" for
    # a table a numbered migration creates.
    type: str = ""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A signal's table as the worker writes it: columns in the table's order, without the sink's
    delivery columns (`_ingest_source`, `_ingest_offset`). A test checks them against the migrated table.

    With a type on every column the spec is the table's only declaration: the migration runner creates it
    (single node or cluster) and `llmops migrate --print --retention` gives it `retention_days`.
    """

    name: str
    columns: tuple[ColumnSpec, ...]
    retention_days: int | None = None  # the optional TTL on the window column, for a table created from the spec

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate columns")
        bad = [c.name for c in self.columns if c.merge not in _MERGES]
        if bad:
            raise ValueError(f"{self.name}: columns {bad} declare no known merge")
        if not any(c.merge == "key" for c in self.columns):
            raise ValueError(f"{self.name}: no key column")
        typed = [bool(c.type) for c in self.columns]
        if any(typed) and not all(typed):
            raise ValueError(f"{self.name}: give every column a type (the spec creates the table) or none")
        if self.declares_table and self.window_column is None:
            raise ValueError(f"{self.name}: a table created from its spec needs a DateTime key column (its window)")

    @property
    def declares_table(self) -> bool:
        """Whether the spec is the table's declaration (every column typed) rather than a migration."""
        return all(c.type for c in self.columns)

    @property
    def window_column(self) -> str | None:
        """The first key column of a DateTime type: the window start, which partitions the table and expires it."""
        return next((c.name for c in self.columns if c.merge == "key" and c.type.startswith("DateTime")), None)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key(self) -> tuple[str, ...]:
        """The columns that identify a row: window start and the dimensions."""
        return tuple(c.name for c in self.columns if c.merge == "key")


Acc = TypeVar("Acc")

# What a signal folds: a `DecodedRecord` field (processors/core/pipeline.py), the calls unless it says otherwise.
Input = Literal["calls", "evaluations"]
_INPUTS: Final = frozenset(get_args(Input))


class Signal(Protocol[Acc]):
    """A per-window signal; see the module docstring for the rules the worker relies on.

    Optionally a class attribute `input` (`Input`): what `fold` takes, "calls" (`LLMCall`s) when absent.
    """

    @property
    def table(self) -> TableSpec: ...

    def new(self) -> Acc:
        """An empty accumulator."""
        ...

    def fold(self, acc: Acc, calls: Sequence[Any]) -> Acc:
        """`acc` with `calls` (or evaluations, by `input`) added (may update `acc` in place and return it)."""
        ...

    def rows(self, acc: Acc) -> TableRows:
        """The accumulator's partial rows, columns `table.column_names` in order."""
        ...


def signal_input(signal: Signal[Any]) -> Input:
    """What `signal` folds: "calls" or "evaluations" (its `input` attribute; calls when it has none)."""
    value = getattr(signal, "input", "calls")
    if value == "calls":
        return "calls"
    if value == "evaluations":
        return "evaluations"
    raise ValueError(f"{signal.table.name}: input {value!r} is none of {sorted(_INPUTS)}")


def signal_rows(signal: Signal[Acc], calls: Sequence[Any]) -> TableRows:
    """The rows one signal makes of one source's calls (or evaluations) in a batch (the caller adds the delivery
    columns)."""
    return signal.rows(signal.fold(signal.new(), calls))
