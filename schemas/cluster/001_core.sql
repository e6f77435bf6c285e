-- Cluster variant of schemas/migrations/001_core.sql: otel_traces, llm_calls, ingest_errors.
-- <table>_local: the Replicated* table on every shard (same columns, PARTITION BY, ORDER BY, indexes).
-- <table>: a Distributed table under the contract name; the pipeline inserts into it, Grafana reads it.
--
-- Sharding key of the tables the sink fences (every row has _ingest_source = '<topic id>/<partition>'):
-- the Kafka partition number. All rows of one source land on one shard, so one insert is atomic per
-- source and max(_ingest_offset) per source is exact (README.md, "Why this sharding key").
-- Partition p goes to shard p mod (sum of shard weights): make the partition count a multiple of it.
--
-- Replicated tables deduplicate inserts by default (replicated_deduplication_window), and honour the
-- sink's insert_deduplication_token, so non_replicated_deduplication_window is not set here.

CREATE TABLE IF NOT EXISTS otel_traces_local ON CLUSTER '{cluster}'
(
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested
    (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested
    (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64,
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/otel_traces_local', '{replica}')
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS otel_traces ON CLUSTER '{cluster}'
(
    Timestamp DateTime64(9),
    TraceId String,
    SpanId String,
    ParentSpanId String,
    TraceState String,
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    ServiceName LowCardinality(String),
    ResourceAttributes Map(LowCardinality(String), String),
    ScopeName String,
    ScopeVersion String,
    SpanAttributes Map(LowCardinality(String), String),
    Duration UInt64,
    StatusCode LowCardinality(String),
    StatusMessage String,
    Events Nested
    (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ),
    Links Nested
    (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ),
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64
)
ENGINE = Distributed('{cluster}', currentDatabase(), otel_traces_local, toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1]));

CREATE TABLE IF NOT EXISTS llm_calls_local ON CLUSTER '{cluster}'
(
    ts DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    service LowCardinality(String),
    environment LowCardinality(String),
    team LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    response_model LowCardinality(String),
    model LowCardinality(String) COMMENT 'response_model, else request_model: the model billed',
    operation LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    agent LowCardinality(String),
    conversation_id String CODEC(ZSTD(1)),
    input_tokens UInt64 COMMENT 'includes cache reads and cache writes (OTel GenAI semantics)',
    output_tokens UInt64 COMMENT 'includes reasoning tokens',
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost Nullable(Decimal(38, 12)) COMMENT 'USD from the pricing catalog; NULL when the model is unpriced',
    reported_cost Nullable(Decimal(38, 12)) COMMENT 'USD as reported by the span, if any',
    pricing_entry LowCardinality(String),
    duration_ms Float64,
    ttft_ms Nullable(Float64) COMMENT 'NULL when the call was not streamed',
    status LowCardinality(String),
    error_type LowCardinality(String),
    finish_reason LowCardinality(String),
    convention LowCardinality(String),
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64,
    pricing_source LowCardinality(String) DEFAULT '' COMMENT 'user | project | base | empty when unpriced',
    pricing_version LowCardinality(String) DEFAULT '' COMMENT 'base price snapshot in force: genai-prices X.Y.Z or sha256 of an updated file',
    pricing_region LowCardinality(String) DEFAULT '' COMMENT 'deployment key: aws:us-gov, aws:global, azure:eu, gcp:us-central1; empty when the span does not say',
    service_tier LowCardinality(String) DEFAULT '' COMMENT 'flex | priority | batch | scale; empty = standard',
    pricing_assumption LowCardinality(String) DEFAULT '' COMMENT 'what the price assumed because the span did not say it'
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/llm_calls_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (service, model, ts);

CREATE TABLE IF NOT EXISTS llm_calls ON CLUSTER '{cluster}'
(
    ts DateTime64(9, 'UTC'),
    trace_id String,
    span_id String,
    service LowCardinality(String),
    environment LowCardinality(String),
    team LowCardinality(String),
    provider LowCardinality(String),
    request_model LowCardinality(String),
    response_model LowCardinality(String),
    model LowCardinality(String) COMMENT 'response_model, else request_model: the model billed',
    operation LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    agent LowCardinality(String),
    conversation_id String,
    input_tokens UInt64 COMMENT 'includes cache reads and cache writes (OTel GenAI semantics)',
    output_tokens UInt64 COMMENT 'includes reasoning tokens',
    cache_read_tokens UInt64,
    cache_write_tokens UInt64,
    reasoning_tokens UInt64,
    cost Nullable(Decimal(38, 12)) COMMENT 'USD from the pricing catalog; NULL when the model is unpriced',
    reported_cost Nullable(Decimal(38, 12)) COMMENT 'USD as reported by the span, if any',
    pricing_entry LowCardinality(String),
    duration_ms Float64,
    ttft_ms Nullable(Float64) COMMENT 'NULL when the call was not streamed',
    status LowCardinality(String),
    error_type LowCardinality(String),
    finish_reason LowCardinality(String),
    convention LowCardinality(String),
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64,
    pricing_source LowCardinality(String) DEFAULT '' COMMENT 'user | project | base | empty when unpriced',
    pricing_version LowCardinality(String) DEFAULT '' COMMENT 'base price snapshot in force: genai-prices X.Y.Z or sha256 of an updated file',
    pricing_region LowCardinality(String) DEFAULT '' COMMENT 'deployment key: aws:us-gov, aws:global, azure:eu, gcp:us-central1; empty when the span does not say',
    service_tier LowCardinality(String) DEFAULT '' COMMENT 'flex | priority | batch | scale; empty = standard',
    pricing_assumption LowCardinality(String) DEFAULT '' COMMENT 'what the price assumed because the span did not say it'
)
ENGINE = Distributed('{cluster}', currentDatabase(), llm_calls_local, toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1]));

CREATE TABLE IF NOT EXISTS ingest_errors_local ON CLUSTER '{cluster}'
(
    ts DateTime64(3, 'UTC') COMMENT 'when the error was recorded',
    stage LowCardinality(String) COMMENT 'decode | span | sink',
    reason String,
    service LowCardinality(String),
    trace_id String,
    span_id String,
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    payload_bytes UInt64,
    dead_lettered Bool,
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/ingest_errors_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (stage, ts);

CREATE TABLE IF NOT EXISTS ingest_errors ON CLUSTER '{cluster}'
(
    ts DateTime64(3, 'UTC') COMMENT 'when the error was recorded',
    stage LowCardinality(String) COMMENT 'decode | span | sink',
    reason String,
    service LowCardinality(String),
    trace_id String,
    span_id String,
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64,
    payload_bytes UInt64,
    dead_lettered Bool,
    _ingest_source LowCardinality(String),
    _ingest_offset UInt64
)
ENGINE = Distributed('{cluster}', currentDatabase(), ingest_errors_local, toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1]));
