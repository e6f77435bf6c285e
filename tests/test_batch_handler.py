"""The batch handler on the real decoder and a chDB sink, without Kafka: what a batch leaves behind."""

from __future__ import annotations

import asyncio
import gc
import os

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmops.config import Settings
from processors.batch_handler import BatchHandler
from processors.core.pipeline import Poison, SourceRecord
from processors.stages import build_call_stages
from sinks.clickhouse.writer import ClickHouseSink

START = 1_764_000_000_000_000_000


def _record(offset: int, spans: int = 20) -> SourceRecord:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "handler-test"
    scope = rs.scope_spans.add()
    for i in range(spans):
        span = scope.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name="chat gpt-4o-mini",
            kind=3,
            start_time_unix_nano=START + i,
            end_time_unix_nano=START + i + 10**9,
        )
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
        ):
            span.attributes.add(key=key).value.string_value = value
        span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 100
        span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 20
    return SourceRecord("otlp_spans", 0, offset, request.SerializeToString(), "handler-test/0")


def _insert_contexts_and_columns() -> tuple[int, int]:
    """Live InsertContexts, and the column lists they still reach (what used to pile up)."""
    contexts = [o for o in gc.get_objects() if type(o).__name__ == "InsertContext"]
    held = sum(len(getattr(c, "_block_columns", None) or []) for c in contexts)
    return len(contexts), held


def test_batches_leave_a_bounded_set_of_insert_contexts(chdb_client: Client) -> None:
    """clickhouse-connect's insert contexts form reference cycles holding the inserted columns;
    under the worker's GC thresholds fresh ones per insert outlived their batch and piled up.
    The sink reuses one per table, so the live set stays the same however many batches run."""
    dead: list[Poison] = []

    async def dead_letter(item: Poison) -> None:
        dead.append(item)

    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), build_call_stages(Settings()), dead_letter)
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100_000, 50, 100)  # as processors/worker.py sets them
    try:
        before = _insert_contexts_and_columns()
        asyncio.run(handler.handle([_record(offset) for offset in range(4)]))
        after_one = _insert_contexts_and_columns()
        for batch in range(1, 6):
            asyncio.run(handler.handle([_record(offset) for offset in range(4 * batch, 4 * batch + 4)]))
        after_six = _insert_contexts_and_columns()
    finally:
        gc.set_threshold(*thresholds)
    assert not dead and handler.stats.calls == 6 * 80
    assert (
        int(chdb_client.query("SELECT count() FROM llmops.llm_calls WHERE service = 'handler-test'").result_rows[0][0])
        == 6 * 80
    )
    assert after_one[0] - before[0] <= len(build_call_stages(Settings()).tables)
    assert after_six == after_one  # contexts, and the columns they reach (the last insert's), do not grow
