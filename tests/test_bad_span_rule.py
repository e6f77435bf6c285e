"""One bad-span rule: the otel_traces view's WHERE clause (as migrated) and the worker's check
(`processors.decode.span_problem`) keep and refuse the same spans.

The rule is defined once in Python; the view's SQL is frozen in released migrations, so it is
tested against that definition: the same generated spans go through the worker's decode and,
as raw OTLP, through the real sink into chDB, whose materialized view applies its WHERE clause.
"""

from __future__ import annotations

import itertools

from clickhouse_connect.driver.client import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processors.core import bounds
from processors.core.decode import decode_request, span_problem
from processors.core.tables import OtlpRecords
from sinks.clickhouse.writer import ClickHouseSink

_services = itertools.count()


def _ids(size: int) -> st.SearchStrategy[bytes]:
    """Ids of the right size (random, all zero, one non-zero byte), and of wrong sizes."""
    one_set = st.integers(0, size - 1).map(lambda i: bytes(i) + b"\x01" + bytes(size - 1 - i))
    return st.one_of(
        st.binary(min_size=size, max_size=size), st.just(bytes(size)), one_set, st.binary(max_size=2 * size + 1)
    )


_edges = [
    0,
    1,
    bounds.TIME_MIN_NS - 1,
    bounds.TIME_MIN_NS,
    bounds.TIME_MAX_NS - 1,
    bounds.TIME_MAX_NS,
    2**63 - 1,
    2**63,
    2**64 - 1,
]
_starts = st.one_of(
    st.sampled_from(_edges),
    st.integers(0, 2**64 - 1),
    st.integers(bounds.TIME_MIN_NS - 10, bounds.TIME_MIN_NS + 10),
    st.integers(bounds.TIME_MAX_NS - 10, bounds.TIME_MAX_NS + 10),
)
_spans = st.lists(st.tuples(_ids(16), _ids(8), _starts), min_size=1, max_size=40)
_TRACE, _SPAN, _START = b"\x01" * 16, b"\x02" * 8, bounds.TIME_MIN_NS + 1
# Every edge once: each start time with good ids, each kind of bad id with a good start time.
_EDGES = [(_TRACE, _SPAN, start) for start in _edges] + [
    (trace_id, span_id, _START)
    for trace_id, span_id in [
        (bytes(16), _SPAN),
        (b"\x01" * 15, _SPAN),
        (b"\x01" * 17, _SPAN),
        (b"", _SPAN),
        (bytes(15) + b"\x01", _SPAN),
        (_TRACE, bytes(8)),
        (_TRACE, b"\x02" * 7),
        (_TRACE, b"\x02" * 9),
        (_TRACE, b""),
        (_TRACE, b"\x01" + bytes(7)),
    ]
]


# Each example is one insert into chDB (about 0.1 s), so few of them, with many spans each.
@settings(max_examples=10, deadline=None)
@given(spans=_spans)
@example(spans=_EDGES)
def test_the_view_stores_exactly_the_spans_the_worker_finds_valid(
    chdb_client: Client, spans: list[tuple[bytes, bytes, int]]
) -> None:
    service = f"bad-span-rule-{next(_services)}"
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    scope = rs.scope_spans.add()
    for n, (trace_id, span_id, start) in enumerate(spans):
        scope.spans.add(
            trace_id=trace_id, span_id=span_id, start_time_unix_nano=start, end_time_unix_nano=start, name=f"s{n}"
        )
    wire = request.SerializeToString()

    valid = {
        f"s{n}" for n, (trace_id, span_id, start) in enumerate(spans) if span_problem(trace_id, span_id, start) is None
    }
    decoded = decode_request(wire)
    assert decoded.span_count == len(valid) and len(decoded.problems) == len(spans) - len(valid)
    assert {view.name for view in decoded.spans} == valid

    batch = OtlpRecords("otel_traces")
    batch.append(wire, "bad-span-rule/0", next(_services), decoded.span_count)
    ClickHouseSink(chdb_client, "llmops").write(batch, f"otel_traces:{service}")
    stored = chdb_client.query(
        "SELECT SpanName FROM llmops.otel_traces WHERE ServiceName = {s:String}", parameters={"s": service}
    ).result_rows
    assert sorted(row[0] for row in stored) == sorted(valid)
