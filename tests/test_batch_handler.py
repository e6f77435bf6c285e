"""The batch handler on the real decoder and a chDB sink, without Kafka: what a batch leaves behind."""

from __future__ import annotations

import asyncio
import gc
import os

from clickhouse_connect.driver.client import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmops.config import Settings
from processors.batch_handler import BatchHandler
from processors.pipeline import Poison, SourceRecord
from processors.stages import build_call_stages
from sinks.clickhouse.writer import ClickHouseSink

START = 1_764_000_000_000_000_000




def _record(offset: int, spans: int = 20) -> SourceRecord:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "handler-test"
    scope = rs.scope_spans.add()
    for i in range(spans):
        span = scope.spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o-mini", kind=3,
                               start_time_unix_nano=START + i, end_time_unix_nano=START + i + 10**9)  # fmt: skip
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o-mini")):
            span.attributes.add(key=key).value.string_value = value
        span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 100
        span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 20
    return SourceRecord("otlp_spans", 0, offset, request.SerializeToString(), "handler-test/0")


def test_a_written_batch_leaves_no_insert_context_behind(chdb_client: Client) -> None:
    """clickhouse-connect's insert contexts form reference cycles holding the inserted columns;
    under the worker's GC thresholds they would outlive the batch and pile up."""
    dead: list[Poison] = []

    async def dead_letter(item: Poison) -> None:
        dead.append(item)

    handler = BatchHandler(ClickHouseSink(chdb_client, "llmops"), build_call_stages(Settings()), dead_letter)
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(100_000, 50, 100)  # as processors/worker.py sets them
    try:
        asyncio.run(handler.handle([_record(offset) for offset in range(4)]))
        contexts = [o for o in gc.get_objects() if type(o).__name__ == "InsertContext"]
    finally:
        gc.set_threshold(*thresholds)
    assert not dead and handler.stats.calls == 80
    assert int(chdb_client.query("SELECT count() FROM llmops.llm_calls WHERE service = 'handler-test'").result_rows[0][0]) == 80
    assert contexts == []
