"""ClickHouseSink's row inserts on chDB: retried tokens, reused contexts, LowCardinality columns."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.core.pipeline import Poison, SourceRecord, poison_rows
from processors.core.tables import TableRows
from sinks.clickhouse.writer import ClickHouseSink


def _errors(source: str, offsets: range, service: str = "svc") -> TableRows:
    """ingest_errors rows from the project's own builder, one per dead-lettered record."""
    poison = [Poison(SourceRecord("otlp_spans", 0, offset, b"x" * 10, source), f"bad {offset}") for offset in offsets]
    rows = poison_rows(poison, 1_764_000_000_000)
    rows.column("service")[:] = [service] * len(rows)
    return rows


def _stored(client: Client, source: str) -> Sequence[Sequence[Any]]:
    return client.query(
        "SELECT kafka_offset, stage, service, toTypeName(service) FROM llmops.ingest_errors "
        "WHERE _ingest_source = {s:String} ORDER BY kafka_offset",
        parameters={"s": source},
    ).result_rows


def test_a_retried_insert_with_the_same_token_is_stored_once(chdb_client: Client) -> None:
    sink = ClickHouseSink(chdb_client, "llmops")
    for _ in range(3):
        sink.write(_errors("sink-retry/0", range(5)), "ingest_errors:same-token")
    sink.write(_errors("sink-retry/0", range(5, 8)), "ingest_errors:next-token")
    assert [row[0] for row in _stored(chdb_client, "sink-retry/0")] == list(range(8))
    assert sink.fences("ingest_errors", ["sink-retry/0"]) == {"sink-retry/0": 7}


def test_a_content_token_names_the_rows_and_not_their_object(chdb_client: Client) -> None:
    """TableRows.token (the stages' tokens): rows rebuilt alike share it, so their retried write is stored once;
    other rows, or the same columns in another table, get another token."""
    assert _errors("a/0", range(5)).token() == _errors("a/0", range(5)).token()
    assert _errors("a/0", range(5)).token() != _errors("a/0", range(6)).token()
    assert _errors("a/0", range(5)).token() != _errors("a/0", range(5), service="other").token()
    renamed = _errors("a/0", range(5))
    renamed.table = "ingest_errors_copy"
    assert renamed.token() != _errors("a/0", range(5)).token()
    sink = ClickHouseSink(chdb_client, "llmops")
    for _ in range(2):
        rows = _errors("sink-content-token/0", range(4))
        sink.write(rows, rows.token())
    assert [row[0] for row in _stored(chdb_client, "sink-content-token/0")] == list(range(4))


def test_low_cardinality_columns_sent_as_strings_keep_their_values_and_type(chdb_client: Client) -> None:
    sink = ClickHouseSink(chdb_client, "llmops")
    sink.write(_errors("sink-lc/0", range(3), service="checkout-ü"), "ingest_errors:lc")
    assert _stored(chdb_client, "sink-lc/0") == [
        (i, "decode", "checkout-ü", "LowCardinality(String)") for i in range(3)
    ]


def test_concurrent_writes_to_one_table_share_its_context_safely(chdb_client: Client) -> None:
    sink = ClickHouseSink(chdb_client, "llmops")
    threads = [
        threading.Thread(
            target=sink.write, args=(_errors(f"sink-threads/{n}", range(200)), f"ingest_errors:threads-{n}")
        )
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(4):
        assert [row[0] for row in _stored(chdb_client, f"sink-threads/{n}")] == list(range(200))
