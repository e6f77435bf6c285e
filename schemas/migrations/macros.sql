{# Macros the migrations import. A released migration's rendered text is frozen (its checksum is in
   schema_migrations, and tests/test_cluster_ddl.py pins it), so a macro changes only by a new parameter
   whose other values keep the text they rendered. #}

{# The sink's delivery columns, on every table it writes (sinks/clickhouse/README.md): the Kafka source
   '<topic id>/<partition>' and offset a row came from; max(_ingest_offset) per source is the fence. #}
{% macro delivery_columns(offset="UInt64", defaults=true) %}
_ingest_source LowCardinality(String){{ " DEFAULT ''" if defaults }},
    _ingest_offset {{ offset }}{{ " DEFAULT 0" if defaults }}{% endmacro %}

{# otel_traces rows from the raw OTLP in otlp_ingest: the materialized view's query (005), the same
   rows planned with one otlp_attributes call site (006, one_attributes_call=true), and without spans
   that start outside 2000-01-01 .. 2200-01-01 (009, time_window=true: processors/bounds.py's window).
   The WHERE clause is the bad-span rule; its one definition is processors/decode.span_problem, and
   tests/test_bad_span_rule.py checks that the migrated view keeps exactly the spans it accepts. #}
{% macro otel_traces_select(one_attributes_call, time_window=false) %}
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
{% if one_attributes_call %}
    -- One otlp_attributes call site for the span, its events and its links: the view is
    -- planned again for every inserted block, and each call site is planned on its own.
    (arrayMap(kvs -> otlp_attributes(kvs),
              arrayConcat([span.attributes], arrayMap(e -> e.attributes, span.events), arrayMap(l -> l.attributes, span.links))) AS span_maps)[1]
        AS SpanAttributes,
{% else %}
    otlp_attributes(span.attributes) AS SpanAttributes,
{% endif %}
{% if time_window %}
    if(span.end_time_unix_nano > span.start_time_unix_nano AND span.end_time_unix_nano < 7258118400000000000,
       span.end_time_unix_nano - span.start_time_unix_nano, 0) AS Duration,
{% else %}
    if(span.end_time_unix_nano > span.start_time_unix_nano, span.end_time_unix_nano - span.start_time_unix_nano, 0) AS Duration,
{% endif %}
    if(span.status.code BETWEEN 0 AND 2, ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'][span.status.code + 1], '') AS StatusCode,
    span.status.message AS StatusMessage,
    arrayMap(e -> fromUnixTimestamp64Nano(toInt64(e.time_unix_nano)), span.events) AS `Events.Timestamp`,
    arrayMap(e -> e.name, span.events) AS `Events.Name`,
{% if one_attributes_call %}
    arraySlice(span_maps, 2, length(span.events)) AS `Events.Attributes`,
{% else %}
    arrayMap(e -> otlp_attributes(e.attributes), span.events) AS `Events.Attributes`,
{% endif %}
    arrayMap(l -> lower(hex(l.trace_id)), span.links) AS `Links.TraceId`,
    arrayMap(l -> lower(hex(l.span_id)), span.links) AS `Links.SpanId`,
    arrayMap(l -> l.trace_state, span.links) AS `Links.TraceState`,
{% if one_attributes_call %}
    arraySlice(span_maps, 2 + length(span.events)) AS `Links.Attributes`,
{% else %}
    arrayMap(l -> otlp_attributes(l.attributes), span.links) AS `Links.Attributes`,
{% endif %}
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
{% if time_window %}
  AND span.start_time_unix_nano >= 946684800000000000 AND span.start_time_unix_nano < 7258118400000000000{% else %}
  AND span.start_time_unix_nano != 0{% endif %}{% endmacro %}

{# llm_usage_totals: the sum of every partial per window and key (002; 008 adds columns). #}
{% macro usage_totals(keys, sums) %}
SELECT
{% for key in keys %}
    {{ key }},
{% endfor %}
{% for column in sums %}
    sum({{ column }}) AS {{ column }}{{ "," if not loop.last }}
{% endfor %}
FROM llm_usage_1m
GROUP BY {{ keys | join(", ") }}{% endmacro %}
