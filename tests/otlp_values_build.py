"""Python values into OTLP AnyValue messages, for tests that build requests by hand."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["set_any_value", "any_value_of"]


def set_any_value(target: AnyValue, value: Any) -> None:
    """Write `value` (bool, int, float, str, bytes, list or dict, nested) into `target`."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            set_any_value(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            set_any_value(target.kvlist_value.values.add(key=key).value, item)
    else:
        raise TypeError(value)


def any_value_of(value: Any) -> AnyValue:
    out = AnyValue()
    set_any_value(out, value)
    return out
