"""Raw OTLP records into ClickHouse, which flattens them into otel_traces itself.

Why: building a Python object per attribute of every span was most of the
worker's CPU. ClickHouse parses the records' protobuf in C++ (Protobuf input
format, schema `schemas/otlp/trace_ingest.proto` sent inline) into the Null
table `otlp_ingest`; migration 005's materialized view writes the rows.

Each record is framed as an `IngestRecord`: its OTLP bytes followed by two
extra fields (its fence position, source and offset). Protobuf merges
concatenated messages, so this costs one bytes join and no parsing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources

__all__ = ["INGEST_TABLE", "frame_records", "insert_settings", "ingest_schema"]

INGEST_TABLE = "otlp_ingest"
_SOURCE_TAG = b"\x7a"  # field 15, wire type 2 (length-delimited)
_OFFSET_TAG = b"\x80\x01"  # field 16, wire type 0 (varint)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def frame_records(values: Iterable[bytes], sources: Iterable[str], offsets: Iterable[int]) -> bytes:
    """Length-delimited IngestRecord messages, the Protobuf format's input."""
    parts: list[bytes] = []
    for value, source, offset in zip(values, sources, offsets, strict=True):
        encoded_source = source.encode()
        tail = _SOURCE_TAG + _varint(len(encoded_source)) + encoded_source + _OFFSET_TAG + _varint(offset)
        parts.append(_varint(len(value) + len(tail)))
        parts.append(value)
        parts.append(tail)
    return b"".join(parts)


def ingest_schema() -> str:
    """trace_ingest.proto without comments or blank lines (it travels in every insert's settings)."""
    text = (resources.files("schemas") / "otlp" / "trace_ingest.proto").read_text()
    lines = (re.sub(r"//.*", "", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


@functools.cache
def _schema_settings() -> tuple[tuple[str, str | int], ...]:
    return (
        ("format_schema_source", "string"),
        ("format_schema", ingest_schema()),
        ("format_schema_message_name", "IngestRecord"),
        ("input_format_protobuf_oneof_presence", 1),
        # A server parses the insert body 16 records (~8k spans) at a time, so the view's memory
        # is bounded by the block, not the batch. chDB reads clickhouse-connect's INSERT ... FROM
        # INFILE as one block whatever this says (measured: a view counting rows per block sees
        # one block per insert), so there the batch size bounds it (BENCHMARKS.md).
        ("max_insert_block_size", 16),
        # Every insert plans the view again; this analyzer pass costs ~40 ms of the ~110 ms it
        # takes to plan the view's SELECT (chDB 26.9), and the view has no comparison chains.
        ("optimize_and_compare_chain", 0),
        # otel_traces is partitioned by day: a record whose spans span more than 100 days must
        # still be stored (refusing it was retried as transient until the worker gave up).
        ("throw_on_max_partitions_per_insert_block", 0),
    )


def insert_settings() -> dict[str, str | int]:
    """The settings that make ClickHouse read IngestRecord messages (schema inline, oneof presence)."""
    return dict(_schema_settings())
