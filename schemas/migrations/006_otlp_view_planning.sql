{% from "macros.sql" import otel_traces_select %}
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
CREATE FUNCTION IF NOT EXISTS otlp_masked_map{{ on_cluster }} AS (keys, vals, keep) -> mapFromArrays(
    arrayFilter((k, m) -> m, keys, keep),
    arrayFilter((v, m) -> m, vals, keep));

-- Keys and values -> Map; a repeated key keeps its last value, as the Collector does
-- (the mask is only computed for the rare spans that repeat a key).
CREATE OR REPLACE FUNCTION otlp_map_last_wins{{ on_cluster }} AS (keys, vals) -> otlp_masked_map(keys, vals,
    if(length(arrayDistinct(keys)) = length(keys),
       arrayWithConstant(length(keys), 1),
       arrayMap((k, i) -> indexOf(arrayReverse(keys), k) = length(keys) - i + 1, keys, arrayEnumerate(keys))));

-- Swaps the view's query in place: inserts never see a missing view.
ALTER TABLE otlp_ingest_to_otel_traces{{ on_cluster }} MODIFY QUERY
{{ otel_traces_select(one_attributes_call=true) }};
