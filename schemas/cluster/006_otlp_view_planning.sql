-- Cluster variant of schemas/migrations/006_otlp_view_planning.sql: the same statements with ON CLUSTER.
-- tests/test_cluster_ddl.py checks that every statement here equals the single-node one plus ON CLUSTER.

-- The same otel_traces rows as migration 005, planned in about two thirds of the time.
--
-- ClickHouse plans a materialized view's SELECT again for every inserted block, and
-- with the worker's batches that planning was more than half of the CPU of an
-- otel_traces insert (~100 ms of ~180 ms per 16k spans, chDB 26.9; BENCHMARKS.md).
-- SQL functions are expanded inline, so the cost grows with the number of places
-- the attribute conversion appears. Two changes, with identical rows:
-- * otlp_map_last_wins names `vals` (the converted values) once instead of twice;
-- * the span's, its events' and its links' attributes go through one call site.

-- Keeps the entries of `keys`/`vals` where `keep` is 1.
CREATE FUNCTION IF NOT EXISTS otlp_masked_map ON CLUSTER '{cluster}' AS (keys, vals, keep) -> mapFromArrays(
    arrayFilter((k, m) -> m, keys, keep),
    arrayFilter((v, m) -> m, vals, keep));

-- Keys and values -> Map; a repeated key keeps its last value, as the Collector does
-- (the mask is only computed for the rare spans that repeat a key).
CREATE OR REPLACE FUNCTION otlp_map_last_wins ON CLUSTER '{cluster}' AS (keys, vals) -> otlp_masked_map(keys, vals,
    if(length(arrayDistinct(keys)) = length(keys),
       arrayWithConstant(length(keys), 1),
       arrayMap((k, i) -> indexOf(arrayReverse(keys), k) = length(keys) - i + 1, keys, arrayEnumerate(keys))));

-- Swaps the view's query in place: inserts never see a missing view.
ALTER TABLE otlp_ingest_to_otel_traces ON CLUSTER '{cluster}' MODIFY QUERY
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
    if(span.end_time_unix_nano > span.start_time_unix_nano, span.end_time_unix_nano - span.start_time_unix_nano, 0) AS Duration,
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
  AND span.start_time_unix_nano != 0;
