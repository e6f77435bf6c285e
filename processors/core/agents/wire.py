"""The record a worker sends to the keyed agent-span topic: one trace's run spans of a batch, JSON.

Keyed by trace id, so every span of a run reaches the one stage that assembles it, whatever record
or partition of `otlp_spans` it came in (`runs.py`). A record holds only what a run's row and the
runaway rules read (`RunSpan`), never the span's attributes; a trace with many spans in one batch is
split into records under `max_bytes`. The decoding worker builds them with `encode_run_spans`; the
stage reads them with `decode_run_spans`, which refuses anything that is not such a record.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from processors.core.agents.spans import ROLES, RunSpan
from processors.core.errors import PermanentError

__all__ = ["MalformedRunRecord", "decode_run_spans", "encode_run_spans"]

MAX_RECORD_BYTES: Final = 500_000
# RunSpan's fields in record order: a span is a JSON array, about half the bytes of an object.
_FIELDS: Final = (
    "span_id", "parent_span_id", "role", "service", "name", "start_ns", "end_ns", "error", "tool_args", "mcp",
    "user_id", "conversation_id", "input_tokens", "output_tokens", "cost",
)  # fmt: skip
_INTS: Final = frozenset({"start_ns", "end_ns", "input_tokens", "output_tokens"})
_BOOLS: Final = frozenset({"error", "mcp"})


class MalformedRunRecord(PermanentError, ValueError):
    """A record on the agent-span topic that no worker of this version wrote (a bug or another producer)."""


def encode_run_spans(spans: Iterable[RunSpan], max_bytes: int = MAX_RECORD_BYTES) -> list[tuple[str, bytes]]:
    """(trace id, record) pairs: the spans grouped by trace, each record under `max_bytes` (one span is far smaller)."""
    by_trace: dict[str, list[bytes]] = {}
    for span in spans:
        row = [getattr(span, name) for name in _FIELDS]
        row[-1] = None if span.cost is None else str(span.cost)
        by_trace.setdefault(span.trace_id, []).append(orjson.dumps(row))
    records: list[tuple[str, bytes]] = []
    for trace_id, encoded in by_trace.items():
        head = orjson.dumps({"trace_id": trace_id})[:-1] + b',"spans":['
        chunk: list[bytes] = []
        size = len(head) + 2
        for item in encoded:
            if chunk and size + len(item) + 1 > max_bytes:
                records.append((trace_id, head + b",".join(chunk) + b"]}"))
                chunk, size = [], len(head) + 2
            chunk.append(item)
            size += len(item) + 1
        records.append((trace_id, head + b",".join(chunk) + b"]}"))
    return records


def decode_run_spans(value: bytes) -> list[RunSpan]:
    """The spans of one record; MalformedRunRecord for anything `encode_run_spans` does not write."""
    if len(value) > 2 * MAX_RECORD_BYTES:
        raise MalformedRunRecord(f"agent-span record of {len(value)} bytes (at most {MAX_RECORD_BYTES} are written)")
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedRunRecord(f"agent-span record is not JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("trace_id"), str) or not record["trace_id"]:
        raise MalformedRunRecord("agent-span record without a trace_id")
    rows = record.get("spans")
    if not isinstance(rows, list):
        raise MalformedRunRecord("agent-span record without a spans array")
    return [_span(record["trace_id"], row) for row in rows]


def _span(trace_id: str, row: Any) -> RunSpan:
    if not isinstance(row, list) or len(row) != len(_FIELDS):
        raise MalformedRunRecord(f"agent span of {trace_id} is not a {len(_FIELDS)}-field array")
    fields = dict(zip(_FIELDS, row, strict=True))
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
    if fields["role"] not in ROLES or not fields["span_id"]:
        raise MalformedRunRecord(f"agent span of {trace_id}: role {fields['role']!r}, span id {fields['span_id']!r}")
    if fields["cost"] is not None:
        try:
            fields["cost"] = Decimal(fields["cost"])
        except InvalidOperation:
            raise MalformedRunRecord(f"agent span of {trace_id}: cost {fields['cost']!r}") from None
        if not fields["cost"].is_finite():
            raise MalformedRunRecord(f"agent span of {trace_id}: cost {fields['cost']!r}")
    return RunSpan(trace_id=trace_id, **fields)
