"""OTLP AnyValue/KeyValue to Python values.

Hot path: called for every attribute of every span, so it dispatches on the
oneof name once and avoids generic reflection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["any_value", "attributes_dict"]


def any_value(value: Any) -> Any:
    """Decode one opentelemetry.proto.common.v1.AnyValue into a Python value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return None


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
