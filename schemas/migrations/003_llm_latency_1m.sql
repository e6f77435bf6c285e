{% from "macros.sql" import delivery_columns %}
-- Each statement ends with a line holding only the statement terminator (the migration runner splits there).
-- llm_latency_1m: TTFT, duration and time-per-output-token per 1-minute event-time window and key.
-- Every row is a PARTIAL: one batch of one stage worker. Late data and several batches add rows
-- for the same window and key, so readers always aggregate (sum/min/max, sumMap for the sketch).
-- Plain MergeTree on purpose: a summing engine would add up min, max, p50..p99 and sketch_gamma.
--
-- sketch: DDSketch-style log buckets, Map(Int32 bucket key, UInt64 count), positive values only.
--   gamma = (1 + a) / (1 - a), key k = ceil(log(v) / log(gamma)), bucket value 2 * gamma^k / (gamma + 1).
--   sketch_gamma holds the gamma the row was built with (a = 0.01 gives 1.0202020202...).
-- nonpositive_count: values <= 0 (clock skew) or not finite, counted here and in count,
--   kept out of the sketch and the quantiles.
-- count: all values of the metric. sum, min, max: over the finite values.
-- p50..p99: quantiles of THIS partial row only, for a quick look. Never average them,
--   merge the sketches instead (sketch_quantile below).
-- _ingest_source, _ingest_offset: filled by the sink for exactly-once delivery.
{% call table("llm_latency_1m", shard_by=by_partition) %}
(
    window_start DateTime('UTC'),
    service LowCardinality(String),
    environment LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    operation LowCardinality(String),
    metric LowCardinality(String),
    count UInt64,
    sum Float64,
    min Float64,
    max Float64,
    p50 Float64,
    p90 Float64,
    p95 Float64,
    p99 Float64,
    nonpositive_count UInt64,
    sketch_gamma Float64,
    sketch Map(Int32, UInt64),
    {{ delivery_columns() }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (metric, model, service, window_start)
SETTINGS non_replicated_deduplication_window = 1000
{% endcall %};

-- sketch_quantile_gamma(buckets, q, gamma): quantile q of a merged sketch built with gamma.
-- Rank: the bucket holding the 0-based floor(q * (n - 1))-th value (numpy method lower),
-- the same rule as processors/sketch.py. NaN for an empty sketch.
-- Usage: sketch_quantile_gamma(sumMap(sketch), 0.95, any(sketch_gamma)) ... GROUP BY ..., sketch_gamma
CREATE FUNCTION IF NOT EXISTS sketch_quantile_gamma{{ on_cluster }} AS (buckets, q, gamma) ->
    if(
        empty(buckets),
        nan,
        2 * pow(
            gamma,
            arrayElement(
                arraySort(mapKeys(buckets)),
                arrayFirstIndex(
                    c -> c > q * (arraySum(mapValues(buckets)) - 1),
                    arrayCumSum(arraySort((v, k) -> k, mapValues(buckets), mapKeys(buckets)))
                )
            )
        ) / (gamma + 1)
    )
;

-- sketch_quantile(buckets, q): the same for the default relative accuracy 0.01.
-- Usage: SELECT model, sketch_quantile(sumMap(sketch), 0.95) FROM llm_latency_1m
--        WHERE metric = 'ttft_ms' AND window_start >= ... GROUP BY model
CREATE FUNCTION IF NOT EXISTS sketch_quantile{{ on_cluster }} AS (buckets, q) ->
    sketch_quantile_gamma(buckets, q, 1.01 / 0.99)
;

-- llm_latency_merged(from_ts, to_ts): every key's merged numbers over [from_ts, to_ts).
-- Usage: SELECT model, p95 FROM llm_latency_merged(from_ts = '2026-01-01 00:00:00', to_ts = '2026-01-02 00:00:00')
--        WHERE metric = 'ttft_ms'
-- Quantiles are clamped into [min, max], which only brings them closer to the truth.
CREATE VIEW IF NOT EXISTS llm_latency_merged{{ on_cluster }} AS
SELECT
    metric,
    service,
    environment,
    provider,
    model,
    operation,
    sketch_gamma,
    sum(count) AS samples,
    sum(nonpositive_count) AS nonpositive_samples,
    sum(`sum`) AS value_sum,
    min(`min`) AS min_value,
    max(`max`) AS max_value,
    sumMap(sketch) AS merged_sketch,
    greatest(min_value, least(max_value, sketch_quantile_gamma(merged_sketch, 0.5, sketch_gamma))) AS p50,
    greatest(min_value, least(max_value, sketch_quantile_gamma(merged_sketch, 0.9, sketch_gamma))) AS p90,
    greatest(min_value, least(max_value, sketch_quantile_gamma(merged_sketch, 0.95, sketch_gamma))) AS p95,
    greatest(min_value, least(max_value, sketch_quantile_gamma(merged_sketch, 0.99, sketch_gamma))) AS p99
FROM llm_latency_1m
WHERE window_start >= {from_ts:DateTime('UTC')} AND window_start < {to_ts:DateTime('UTC')}
GROUP BY metric, service, environment, provider, model, operation, sketch_gamma
;
