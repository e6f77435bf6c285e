{% from "macros.sql" import otel_traces_select %}
-- ClickHouse fills otel_traces from the raw OTLP bytes, so the worker never
-- builds a Python object per attribute of every span (that was most of its CPU).
--
-- The worker inserts each batch of Kafka records into `otlp_ingest` (Null
-- engine: it stores nothing) in the Protobuf format, with the schema
-- schemas/otlp/trace_ingest.proto passed inline (format_schema_source =
-- 'string'). The materialized view flattens resource -> scope -> span and
-- writes otel_traces rows exactly as the Collector's clickhouseexporter would.
-- Spans the worker reports to ingest_errors (bad ids, no start time) are
-- filtered out here by the same rules.

-- AnyValue -> the string held in Map(String, String) columns (pcommon Value.AsString()):
-- scalars as text, arrays and maps as compact JSON. Values nested deeper than
-- one level arrive as raw protobuf bytes and are kept as base64.
CREATE FUNCTION IF NOT EXISTS otlp_scalar_json{{ on_cluster }} AS (sv) -> multiIf(
    tupleElement(sv, 'value') = 'string_value', toJSONString(tupleElement(sv, 'string_value')),
    tupleElement(sv, 'value') = 'bool_value', if(tupleElement(sv, 'bool_value'), 'true', 'false'),
    tupleElement(sv, 'value') = 'int_value', toString(tupleElement(sv, 'int_value')),
    tupleElement(sv, 'value') = 'double_value', toString(tupleElement(sv, 'double_value')),
    tupleElement(sv, 'value') = 'bytes_value', concat('"', base64Encode(tupleElement(sv, 'bytes_value')), '"'),
    tupleElement(sv, 'value') = 'array_value', concat('"', base64Encode(tupleElement(sv, 'array_value')), '"'),
    tupleElement(sv, 'value') = 'kvlist_value', concat('"', base64Encode(tupleElement(sv, 'kvlist_value')), '"'),
    'null');

CREATE FUNCTION IF NOT EXISTS otlp_value_string{{ on_cluster }} AS (av) -> multiIf(
    tupleElement(av, 'value') = 'string_value', tupleElement(av, 'string_value'),
    tupleElement(av, 'value') = 'bool_value', if(tupleElement(av, 'bool_value'), 'true', 'false'),
    tupleElement(av, 'value') = 'int_value', toString(tupleElement(av, 'int_value')),
    tupleElement(av, 'value') = 'double_value', toString(tupleElement(av, 'double_value')),
    tupleElement(av, 'value') = 'bytes_value', base64Encode(tupleElement(av, 'bytes_value')),
    tupleElement(av, 'value') = 'array_value', concat('[', arrayStringConcat(arrayMap(item -> otlp_scalar_json(item), tupleElement(tupleElement(av, 'array_value'), 'values')), ','), ']'),
    tupleElement(av, 'value') = 'kvlist_value', concat('{', arrayStringConcat(arrayMap(entry -> concat(toJSONString(tupleElement(entry, 'key')), ':', otlp_scalar_json(tupleElement(entry, 'value'))), tupleElement(tupleElement(av, 'kvlist_value'), 'values')), ','), '}'),
    '');

-- Keys and values -> Map; a repeated key keeps its last value, as the Collector does
-- (the de-duplication only runs for the rare spans that repeat a key).
CREATE FUNCTION IF NOT EXISTS otlp_map_last_wins{{ on_cluster }} AS (keys, vals) -> if(
    length(arrayDistinct(keys)) = length(keys),
    mapFromArrays(keys, vals),
    mapFromArrays(
        arrayFilter((k, i) -> indexOf(arrayReverse(keys), k) = length(keys) - i + 1, keys, arrayEnumerate(keys)),
        arrayFilter((v, i) -> indexOf(arrayReverse(keys), keys[i]) = length(keys) - i + 1, vals, arrayEnumerate(keys))));

-- Repeated KeyValue -> Map(String, String).
CREATE FUNCTION IF NOT EXISTS otlp_attributes{{ on_cluster }} AS (kvs) -> otlp_map_last_wins(
    arrayMap(attr -> tupleElement(attr, 'key'), kvs),
    arrayMap(attr -> otlp_value_string(tupleElement(attr, 'value')), kvs));

{# AnyValue, unrolled: the tuple ClickHouse reads a KeyValue's value into (indented where it is used). #}
{% set any_value %}
string_value String, bool_value Bool, int_value Int64, double_value Float64,
array_value Tuple(values Array(Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64,
    array_value String, kvlist_value String, bytes_value String,
    value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)))),
kvlist_value Tuple(values Array(Tuple(key String, value Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64,
    array_value String, kvlist_value String, bytes_value String,
    value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7))))),
bytes_value String,
value Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, 'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7){% endset %}
-- One row per Kafka record: IngestRecord in trace_ingest.proto. Column names
-- are the protobuf field names; `value` columns say which oneof member is set.
{% call table("otlp_ingest") %}
(
    ingest_source String,
    ingest_offset UInt64,
    resource_spans Array(Tuple(
        resource Tuple(attributes Array(Tuple(key String, value Tuple(
{{ any_value | indent(12, first=True) }})))),
        scope_spans Array(Tuple(
            scope Tuple(name String, version String),
            spans Array(Tuple(
                trace_id String,
                span_id String,
                trace_state String,
                parent_span_id String,
                name String,
                kind Int32,
                start_time_unix_nano UInt64,
                end_time_unix_nano UInt64,
                attributes Array(Tuple(key String, value Tuple(
{{ any_value | indent(20, first=True) }}))),
                events Array(Tuple(
                    time_unix_nano UInt64,
                    name String,
                    attributes Array(Tuple(key String, value Tuple(
{{ any_value | indent(24, first=True) }}))))),
                links Array(Tuple(
                    trace_id String,
                    span_id String,
                    trace_state String,
                    attributes Array(Tuple(key String, value Tuple(
{{ any_value | indent(24, first=True) }}))))),
                status Tuple(message String, code Int32)))))))
)
ENGINE = Null{% endcall %};

CREATE MATERIALIZED VIEW IF NOT EXISTS otlp_ingest_to_otel_traces{{ on_cluster }} TO otel_traces AS
{{ otel_traces_select(one_attributes_call=false) }};
