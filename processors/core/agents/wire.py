"""The records a worker sends to the agent-span topic: a batch's run spans, partitioned by trace id, JSON.

Every span of one trace goes to the same partition (`partition_of`), so one stage assembles each
run whatever record or partition of `otlp_spans` its spans came in (`runs.py`). A batch sends one
record per partition rather than one per trace: at high volume most traces are a single LLM call,
and a Kafka send per trace cost the worker more than the rest of the agent-run work together
(BENCHMARKS.md, "Agent runs"). A record holds only what a run's row and the runaway rules read
(`RunSpan`), never the span's attributes, and is split under `max_bytes`. The decoding worker
builds them with `encode_run_spans`; the stage reads them with `decode_run_spans`, which refuses
anything that is not such a record.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any, Final

import orjson

from processors.core.agents.spans import ROLES, RunSpan
from processors.core.errors import PermanentError

__all__ = ["MalformedRunRecord", "decode_run_spans", "encode_run_spans", "partition_of"]

MAX_RECORD_BYTES: Final = 500_000
# RunSpan's fields in record order: a span is a JSON array, about half the bytes of an object.
_FIELDS: Final = (
    "trace_id", "span_id", "parent_span_id", "role", "service", "name", "start_ns", "end_ns", "error", "tool_args",
    "mcp", "user_id", "conversation_id", "input_tokens", "output_tokens", "cost",
)  # fmt: skip
_INTS: Final = frozenset({"start_ns", "end_ns", "input_tokens", "output_tokens"})
_BOOLS: Final = frozenset({"error", "mcp"})
_ROW: Final = attrgetter(*_FIELDS)
# The field types of a well-formed span, with and without a cost.
_SIGNATURES: Final = frozenset(
    tuple(int if name in _INTS else bool if name in _BOOLS else cost if name == "cost" else str for name in _FIELDS)
    for cost in (str, type(None))
)


class MalformedRunRecord(PermanentError, ValueError):
    """A record on the agent-span topic that no worker of this version wrote (a bug or another producer)."""


def partition_of(trace_id: str, partitions: int) -> int:
    """The agent-span partition of a trace: the same in every worker for a given partition count."""
    return zlib.crc32(trace_id.encode("utf-8", "surrogatepass")) % partitions


def encode_run_spans(
    spans: Iterable[RunSpan], partitions: int, max_bytes: int = MAX_RECORD_BYTES
) -> list[tuple[int, bytes]]:
    """(partition, record) pairs: the spans grouped by their trace's partition, each record under `max_bytes`
    (one span is far smaller)."""
    by_partition: dict[int, list[list[Any]]] = {}
    partition_of_trace: dict[str, int] = {}  # the spans of a trace come together: one hash per trace
    for span in spans:
        row = list(_ROW(span))
        if row[-1] is not None:
            row[-1] = str(row[-1])
        trace_id = row[0]
        partition = partition_of_trace.get(trace_id)
        if partition is None:
            partition = partition_of_trace[trace_id] = partition_of(trace_id, partitions)
        by_partition.setdefault(partition, []).append(row)
    records: list[tuple[int, bytes]] = []
    for partition, rows in sorted(by_partition.items()):
        records.extend((partition, record) for record in _records(rows, max_bytes))
    return records


def _records(rows: list[list[Any]], max_bytes: int) -> list[bytes]:
    """`rows` in records under `max_bytes`: cut into as many even parts as their size needs, a part that is
    still too big halved (one row always makes a record)."""
    record = orjson.dumps({"spans": rows})
    if len(record) <= max_bytes or len(rows) == 1:
        return [record]
    parts = min(len(rows), -(-len(record) * 5 // (max_bytes * 4)))  # aim 20 % under the bound
    size = -(-len(rows) // parts)
    out: list[bytes] = []
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        encoded = orjson.dumps({"spans": part})
        if len(encoded) <= max_bytes or len(part) == 1:
            out.append(encoded)
        else:
            half = len(part) // 2
            out += _records(part[:half], max_bytes) + _records(part[half:], max_bytes)
    return out


def decode_run_spans(value: bytes) -> list[RunSpan]:
    """The spans of one record; MalformedRunRecord for anything `encode_run_spans` does not write."""
    if len(value) > 2 * MAX_RECORD_BYTES:
        raise MalformedRunRecord(f"agent-span record of {len(value)} bytes (at most {MAX_RECORD_BYTES} are written)")
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedRunRecord(f"agent-span record is not JSON: {exc}") from None
    rows = record.get("spans") if isinstance(record, dict) else None
    if not isinstance(rows, list):
        raise MalformedRunRecord("agent-span record without a spans array")
    return [_fast_span(row) for row in rows]


def _fast_span(row: Any) -> RunSpan:
    """One span, checked by its field types at once; anything unusual takes `_span`, which says what is wrong."""
    if (
        type(row) is list
        and tuple(map(type, row)) in _SIGNATURES
        and row[6] >= 0
        and row[7] >= 0
        and row[13] >= 0
        and row[14] >= 0
        and row[0]
        and row[1]
        and row[3] in ROLES
    ):
        cost = row[15]
        if cost is None:
            return RunSpan(*row)
        try:
            value = Decimal(cost)
        except InvalidOperation:
            raise MalformedRunRecord(f"agent span of {row[0]}: cost {cost!r}") from None
        if value.is_finite():
            row[15] = value
            return RunSpan(*row)
    return _span(row)


def _span(row: Any) -> RunSpan:
    if not isinstance(row, list) or len(row) != len(_FIELDS):
        raise MalformedRunRecord(f"agent span is not a {len(_FIELDS)}-field array: {str(row)[:200]}")
    fields = dict(zip(_FIELDS, row, strict=True))
    trace_id = fields["trace_id"]
    for name, value in fields.items():
        if name in _INTS:
            ok = type(value) is int and value >= 0
        elif name in _BOOLS:
            ok = type(value) is bool
        elif name == "cost":
            ok = value is None or type(value) is str
        else:
            ok = type(value) is str
        if not ok:
            raise MalformedRunRecord(f"agent span of {trace_id}: {name} = {value!r}")
    if fields["role"] not in ROLES or not fields["span_id"] or not trace_id:
        raise MalformedRunRecord(f"agent span of {trace_id!r}: role {fields['role']!r}, span id {fields['span_id']!r}")
    if fields["cost"] is not None:
        try:
            fields["cost"] = Decimal(fields["cost"])
        except InvalidOperation:
            raise MalformedRunRecord(f"agent span of {trace_id}: cost {fields['cost']!r}") from None
        if not fields["cost"].is_finite():
            raise MalformedRunRecord(f"agent span of {trace_id}: cost {fields['cost']!r}")
    return RunSpan(**fields)
