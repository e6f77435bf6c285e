"""OTLP AnyValue/KeyValue to Python values, and the check that a span attribute's bytes are OTLP.

Hot path: called for every attribute of every LLM span, so it dispatches on the
oneof name once and avoids generic reflection; `KeyValueCache` skips the decode
(and the check) for the attribute encodings it has seen before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from processors.core.bounds import MAX_VECTOR_LEN, OverLimit
from processors.core.otlp_schema import AT_SPAN_DEPTH_HEAD, AT_SPAN_DEPTH_TAIL, AttributeAtSpanDepth

__all__ = ["any_value", "attributes_dict", "KeyValueCache"]


def any_value(value: Any, budget: list[int] | None = None) -> Any:
    """Decode one opentelemetry.proto.common.v1.AnyValue into a Python value (`OverLimit` for an array or
    kvlist holding more than MAX_VECTOR_LEN values in all; `budget` is what nested ones have left)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value" or kind == "kvlist_value":
        if budget is not None:
            return _composite(value, kind, budget)
        try:
            return _composite(value, kind, [MAX_VECTOR_LEN])
        except _TooLong:
            return _OVER_LIMIT
    if kind == "bytes_value":
        return value.bytes_value
    return None


class _TooLong(Exception):
    pass


_OVER_LIMIT = OverLimit()


def _composite(value: Any, kind: str, budget: list[int]) -> list[Any] | dict[str, Any]:
    """An array or kvlist of at most MAX_VECTOR_LEN values in all, nested ones included.

    No reader accepts more (the longest is an embedding vector), and turning each value into a Python
    object costs about half a microsecond: a 1 MB record of 100,000 doubles would cost 50 ms. A longer
    one reads as `OverLimit`, checked on its length before any value is decoded.
    """
    items = value.array_value.values if kind == "array_value" else value.kvlist_value.values
    budget[0] -= len(items)
    if budget[0] < 0:
        raise _TooLong
    if kind == "array_value":
        return [any_value(item, budget) for item in items]
    return {kv.key: any_value(kv.value, budget) for kv in items}


def attributes_dict(key_values: Iterable[Any]) -> dict[str, Any]:
    """Repeated KeyValue -> dict; a repeated key keeps its last value (as the Collector does)."""
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        kind = value.WhichOneof("value")
        # Scalars inline: one Python call per attribute is most of the decode cost.
        if kind == "string_value":
            out[kv.key] = value.string_value
        elif kind == "int_value":
            out[kv.key] = value.int_value
        elif kind == "bool_value":
            out[kv.key] = value.bool_value
        elif kind == "double_value":
            out[kv.key] = value.double_value
        else:
            out[kv.key] = any_value(value)
    return out


class KeyValueCache:
    """Serialized KeyValue -> (key, Python value), decoding each distinct encoding once.

    Span attributes repeat exactly from span to span (model, provider, operation,
    prompt), so a dict lookup on the wire bytes replaces most decodes. Only scalar values
    and flat arrays of scalars are remembered (an array is handed out as a fresh list, so no
    two spans share a mutable value), only from short encodings (long texts are rarely
    repeated), and at most `max_entries` of them: the cache starts over when full.
    It pays when attributes repeat: on loadgen spans 0.29 µs per attribute against 1.12 µs
    for `attributes_dict` on parsed KeyValues, on never-repeating values 1.07 against 0.85
    (benchmarks/bench_attributes.py).

    It is also where span attributes are checked as OTLP (the record's parse leaves them bytes):
    `check` parses an encoding as a KeyValue and remembers the short ones in `checked`, so each
    distinct encoding is parsed once; a decode checks too. Both raise DecodeError where the full
    OTLP parse of the record would.
    """

    __slots__ = ("_entries", "_max_encoded_bytes", "_max_entries", "checked")

    def __init__(self, max_entries: int = 32_768, max_encoded_bytes: int = 160) -> None:
        self._entries: dict[bytes, tuple[str, Any]] = {}
        self._max_entries = max_entries
        self._max_encoded_bytes = max_encoded_bytes
        # Short encodings known to parse as a span attribute (read it, don't change it).
        self.checked: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def attributes(self, encoded: Iterable[bytes]) -> dict[str, Any]:
        """Repeated serialized KeyValue -> dict; a repeated key keeps its last value (as the Collector does)."""
        out: dict[str, Any] = {}
        entries = self._entries
        for raw in encoded:
            hit = entries.get(raw)
            if hit is None:
                key, value = self._decode(raw)
                out[key] = value
            else:
                value = hit[1]
                out[hit[0]] = list(value) if type(value) is tuple else value
        return out

    def check(self, raw: bytes) -> None:
        """Raise DecodeError unless `raw` parses as a span attribute in a record."""
        _parse_as_span_attribute(raw)
        if len(raw) <= self._max_encoded_bytes:
            if len(self.checked) >= self._max_entries:
                self.checked.clear()
            self.checked.add(raw)

    def check_all(self, encoded: Iterable[bytes]) -> None:
        checked = self.checked
        for raw in encoded:
            if raw not in checked:
                self.check(raw)

    def _decode(self, raw: bytes) -> tuple[str, Any]:
        kv = _parse_as_span_attribute(raw)
        key = kv.key
        value = any_value(kv.value)
        if len(raw) <= self._max_encoded_bytes:
            kept = value if type(value) in _SCALARS else _immutable_list(value)
            if kept is not None:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
                self._entries[raw] = (key, kept)
        return key, value


_SCALARS = frozenset((str, int, float, bool, bytes, type(None)))


# The parser limits nesting to 100 levels per parse, and in a request a span attribute sits four
# levels down. Each level takes at least two bytes (tag and length, or a group's start and end), so
# only an encoding of more than 2 * 95 bytes can nest deep enough for the two to differ.
_SHALLOW_BYTES = 128


def _varint(n: int) -> bytes:
    if n < 0x4000:  # a Kafka record is at most ~1 MB: mostly one or two bytes
        return bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _parse_as_span_attribute(raw: bytes) -> Any:
    """`raw` as a KeyValue; DecodeError where the full OTLP parse of a request holding it fails.

    One parse: alone when it is too short to reach the nesting limit, else as deep as in a request
    (processors/otlp_schema.AttributeAtSpanDepth), so a record is poison for the same attributes
    whether it is parsed whole or attribute by attribute.
    """
    if len(raw) <= _SHALLOW_BYTES:
        return KeyValue.FromString(raw)
    return AttributeAtSpanDepth.FromString(
        b"".join((AT_SPAN_DEPTH_HEAD, _varint(len(raw)), raw, AT_SPAN_DEPTH_TAIL))
    ).g.g.g.attributes[0]


def _immutable_list(value: Any) -> tuple[Any, ...] | None:
    """A flat list of scalars as the tuple the cache holds; None for anything else (not cached)."""
    if type(value) is list and all(type(item) in _SCALARS for item in value):
        return tuple(value)
    return None
