"""chDB's Native output in the layout a client's protocol revision expects (clickhouse-go over HTTP).

ClickHouse writes the Native format for an HTTP request in the layout of the
`client_protocol_version` the client sends: from revision 1 each block starts
with its BlockInfo, from revision 54454 each column's type is followed by a
"custom serialization" flag. clickhouse-go (Grafana's ClickHouse plugin)
always sends `default_format=Native` with its revision (54460) and reads
blocks that way. chDB's `query(…, "Native")` writes revision 0: no BlockInfo,
no flag. The column data itself is the same (chDB never writes a sparse
column in Native), so the stream is rewritten block by block: BlockInfo
added, a 0 flag after each type. Finding where a column's data ends needs
its type's layout; the types below cover what the pipeline's tables and
queries produce, and anything else is refused by name (`NativeTypeUnsupported`)
rather than sent in a layout the client would misread.
"""

from __future__ import annotations

from processors.core.errors import PermanentError

__all__ = ["CUSTOM_SERIALIZATION_REVISION", "NativeTypeUnsupported", "for_client_revision"]

CUSTOM_SERIALIZATION_REVISION = (
    54454  # DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION (ClickHouse src/Core/ProtocolDefines.h)
)
# BlockInfo as ClickHouse writes it: field 1 is_overflows = 0, field 2 bucket_num = -1, end marker 0.
_BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1, "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4, "Decimal32": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8, "Time": 4, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
    "IntervalNanosecond": 8, "IntervalMicrosecond": 8, "IntervalMillisecond": 8, "IntervalSecond": 8,
    "IntervalMinute": 8, "IntervalHour": 8, "IntervalDay": 8, "IntervalWeek": 8, "IntervalMonth": 8,
    "IntervalQuarter": 8, "IntervalYear": 8,
    "Nothing": 1,
}  # fmt: skip


class NativeTypeUnsupported(PermanentError, ValueError):
    """A result column whose Native layout this module does not know."""


def for_client_revision(data: bytes, revision: int) -> bytes:
    """chDB's revision-0 Native `data` in the layout of client `revision` (0: unchanged)."""
    if revision <= 0:
        return data
    out = bytearray()
    reader = _Reader(data)
    while reader.pos < len(data):
        out += _BLOCK_INFO
        start = reader.pos
        columns = reader.varint()
        rows = reader.varint()
        out += data[start : reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.string()  # name
            type_name = reader.string().decode()
            out += data[start : reader.pos]
            if revision >= CUSTOM_SERIALIZATION_REVISION:
                out.append(0)  # default serialization: the data below is exactly what chDB wrote
            start = reader.pos
            _skip_prefix(reader, type_name)  # a column's serialization prefixes come before all its data
            _skip(reader, type_name, rows)
            out += data[start : reader.pos]
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated Native data")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def string(self) -> bytes:
        return self.take(self.varint())

    def uint64(self) -> int:
        return int.from_bytes(self.take(8), "little")


def _split(type_name: str) -> tuple[str, list[str]]:
    """`Name(arg, arg)` -> ("Name", ["arg", "arg"]), top-level commas only."""
    head, paren, rest = type_name.partition("(")
    if not paren:
        return type_name.strip(), []
    args, depth, current, quoted = [], 0, "", False
    for ch in rest[:-1]:
        if ch == "'" and not current.endswith("\\"):
            quoted = not quoted
        if not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if not quoted and depth == 0 and ch == ",":
            args.append(current.strip())
            current = ""
        else:
            current += ch
    args.append(current.strip())
    return head.strip(), args


def _tuple_element(arg: str) -> str:
    """A Tuple element's type: `name Type` or `Type`."""
    first, space, rest = arg.partition(" ")
    return rest.strip() if space and "(" not in first else arg


def _skip_prefix(reader: _Reader, type_name: str) -> None:
    """The state prefixes of a column, depth first: LowCardinality writes its key version (1) there."""
    name, args = _split(type_name)
    if name == "LowCardinality":
        if reader.uint64() != 1:
            raise NativeTypeUnsupported(f"{type_name} in an unknown serialization version")
    elif name in ("Nullable", "Array"):
        _skip_prefix(reader, args[0])
    elif name == "Map":
        _skip_prefix(reader, f"Tuple({args[0]}, {args[1]})")
    elif name == "Tuple":
        for arg in args:
            _skip_prefix(reader, _tuple_element(arg))


def _skip(reader: _Reader, type_name: str, rows: int) -> None:
    name, args = _split(type_name)
    if name in _FIXED:
        reader.take(_FIXED[name] * rows)
    elif name == "Decimal":
        precision = int(args[0])
        reader.take((4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32) * rows)
    elif name == "String":
        for _ in range(rows):
            reader.string()
    elif name == "FixedString":
        reader.take(int(args[0]) * rows)
    elif name == "Nullable":
        reader.take(rows)
        _skip(reader, args[0], rows)
    elif name in ("Array", "Map"):
        total = 0
        for _ in range(rows):
            total = reader.uint64()  # offsets are cumulative: the last one is the element count
        nested = args[0] if name == "Array" else f"Tuple({args[0]}, {args[1]})"
        _skip(reader, nested, total)
    elif name == "Tuple":
        for arg in args:
            _skip(reader, _tuple_element(arg), rows)
    elif name == "LowCardinality":
        _skip_low_cardinality(reader, args[0], rows)
    else:
        raise NativeTypeUnsupported(
            f"type {type_name} has no Native layout here: select it as another type (e.g. toString(…))"
        )


def _skip_low_cardinality(reader: _Reader, nested: str, rows: int) -> None:
    """(When rows) the index type with flags, the dictionary keys if present, the indexes."""
    if rows == 0:
        return
    flags = reader.uint64()
    index_width = (1, 2, 4, 8)[flags & 0xFF]
    if flags & (1 << 9):  # HasAdditionalKeysBit
        keys = reader.uint64()
        key_name, key_args = _split(nested)
        _skip(reader, key_args[0] if key_name == "Nullable" else nested, keys)
    reader.take(index_width * reader.uint64())
