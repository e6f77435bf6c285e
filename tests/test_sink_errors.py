"""The sink sorts real ClickHouse errors into transient (retry), permanent (dead-letter) and fatal (stop).

A misconfiguration retried for minutes hides the cause and holds the partition; bad data
retried forever is a crash loop. Errors here come from the real engine (chDB).
"""

from __future__ import annotations

import logging

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from processors.core.tables import OtlpRecords, TableRows
from sinks.clickhouse.errors import ErrorClass, FatalSinkError, PermanentSinkError, classify
from sinks.clickhouse.writer import ClickHouseSink


def _error(chdb_client: Client, sql: str) -> Exception:
    with pytest.raises(ClickHouseError) as caught:
        chdb_client.command(sql)
    return caught.value


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 SETTINGS enable_analyzer = 0",  # SETTING_CONSTRAINT_VIOLATION (452)
        "SELECT 1 SETTINGS no_such_setting_anywhere = 1",  # UNKNOWN_SETTING (115)
        "SELECT * FROM llmops.no_such_table",  # UNKNOWN_TABLE (60)
    ],
)
def test_configuration_errors_are_fatal(chdb_client: Client, sql: str) -> None:
    assert classify(_error(chdb_client, sql)) == ErrorClass.FATAL


def test_a_missing_table_stops_the_write_without_retrying(
    chdb_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ClickHouseSink(chdb_client, "llmops", retries=3)
    rows = TableRows("no_such_table", ["x"], [[1]])
    with caplog.at_level(logging.WARNING), pytest.raises(FatalSinkError):
        sink.write(rows, "token")
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_records_the_protobuf_reader_refuses_are_permanent(
    chdb_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ClickHouseSink(chdb_client, "llmops", retries=3)
    records = OtlpRecords("otel_traces")
    # An unknown field encoded as a group: Python's OTLP parser skips it, ClickHouse's reader refuses it (444).
    records.append(b"\xa3\x01\x08\x01\xa4\x01", "test/0", 0, 0)
    with caplog.at_level(logging.WARNING), pytest.raises(PermanentSinkError):
        sink.write(records, "token")
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
