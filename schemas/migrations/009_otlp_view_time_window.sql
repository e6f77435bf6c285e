-- Spans whose start time lies outside 2000-01-01 .. 2200-01-01 are left out of otel_traces,
-- as processors/decode.py leaves them out (it records each in ingest_errors): the same
-- window as processors/bounds.py (TIME_MIN_NS, TIME_MAX_NS).
--
-- Before, such a start time was stored wrapped through Int64 (2**63 became 1677-09-21)
-- and every bad span could open its own daily partition of otel_traces. An end time
-- outside the window gives Duration 0, as an end before the start already did.

-- Swaps the view's query in place (same columns as migration 006): inserts never see a missing view.
ALTER TABLE otlp_ingest_to_otel_traces MODIFY QUERY
SELECT
    fromUnixTimestamp64Nano(toInt64(span.start_time_unix_nano)) AS Timestamp,
    lower(hex(span.trace_id)) AS TraceId,
    lower(hex(span.span_id)) AS SpanId,
    lower(hex(span.parent_span_id)) AS ParentSpanId,
    span.trace_state AS TraceState,
    span.name AS SpanName,
    if(span.kind BETWEEN 0 AND 5,
       ['SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER'][span.kind + 1],
       '') AS SpanKind,
    resource_attributes['service.name'] AS ServiceName,
    resource_attributes AS ResourceAttributes,
    scope.scope.name AS ScopeName,
    scope.scope.version AS ScopeVersion,
    -- One otlp_attributes call site for the span, its events and its links: the view is
    -- planned again for every inserted block, and each call site is planned on its own.
    (arrayMap(kvs -> otlp_attributes(kvs),
              arrayConcat([span.attributes], arrayMap(e -> e.attributes, span.events), arrayMap(l -> l.attributes, span.links))) AS span_maps)[1]
        AS SpanAttributes,
    if(span.end_time_unix_nano > span.start_time_unix_nano AND span.end_time_unix_nano < 7258118400000000000,
       span.end_time_unix_nano - span.start_time_unix_nano, 0) AS Duration,
    if(span.status.code BETWEEN 0 AND 2, ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'][span.status.code + 1], '') AS StatusCode,
    span.status.message AS StatusMessage,
    arrayMap(e -> fromUnixTimestamp64Nano(toInt64(e.time_unix_nano)), span.events) AS `Events.Timestamp`,
    arrayMap(e -> e.name, span.events) AS `Events.Name`,
    arraySlice(span_maps, 2, length(span.events)) AS `Events.Attributes`,
    arrayMap(l -> lower(hex(l.trace_id)), span.links) AS `Links.TraceId`,
    arrayMap(l -> lower(hex(l.span_id)), span.links) AS `Links.SpanId`,
    arrayMap(l -> l.trace_state, span.links) AS `Links.TraceState`,
    arraySlice(span_maps, 2 + length(span.events)) AS `Links.Attributes`,
    ingest_source AS _ingest_source,
    ingest_offset AS _ingest_offset
FROM
(
    SELECT ingest_source, ingest_offset, otlp_attributes(rs.resource.attributes) AS resource_attributes, rs.scope_spans AS scopes
    FROM otlp_ingest
    ARRAY JOIN resource_spans AS rs
)
ARRAY JOIN scopes AS scope
ARRAY JOIN scope.spans AS span
WHERE length(span.trace_id) = 16 AND span.trace_id != repeat('\0', 16)
  AND length(span.span_id) = 8 AND span.span_id != repeat('\0', 8)
  AND span.start_time_unix_nano >= 946684800000000000 AND span.start_time_unix_nano < 7258118400000000000;
