-- Cluster variant of schemas/migrations/003_llm_latency_1m.sql: llm_latency_1m, the sketch functions,
-- llm_latency_merged. Partials are merged at read time (sumMap over the sketches), so rows of one key
-- may live on any shard: sharded by the source's partition like the other fenced tables.
CREATE TABLE IF NOT EXISTS llm_latency_1m_local ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/llm_latency_1m_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (metric, model, service, window_start)
;

CREATE TABLE IF NOT EXISTS llm_latency_1m ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = Distributed('{cluster}', currentDatabase(), llm_latency_1m_local, toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1]))
;

-- SQL functions are stored per server: ON CLUSTER creates them on every node (or configure
-- user_defined_zookeeper_path to keep them in Keeper). Same bodies as the single-node migration.
CREATE FUNCTION IF NOT EXISTS sketch_quantile_gamma ON CLUSTER '{cluster}' AS (buckets, q, gamma) ->
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

CREATE FUNCTION IF NOT EXISTS sketch_quantile ON CLUSTER '{cluster}' AS (buckets, q) ->
    sketch_quantile_gamma(buckets, q, 1.01 / 0.99)
;

-- Reads the Distributed llm_latency_1m: sumMap merges the sketches of all shards.
CREATE VIEW IF NOT EXISTS llm_latency_merged ON CLUSTER '{cluster}' AS
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
