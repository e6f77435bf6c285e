{% from "macros.sql" import delivery_columns %}
-- Core tables: raw spans, normalised LLM calls, ingest errors.
-- Every table carries _ingest_source ('<topic id>/<partition>') and _ingest_offset
-- (the Kafka offset of the record a row came from, or the highest one for
-- aggregated rows): the sink reads max(_ingest_offset) per source after a
-- restart or rebalance and skips what is already stored, so redelivered
-- records are never counted twice. Retries of one insert are deduplicated by
-- insert_deduplication_token (non_replicated_deduplication_window).

-- Column layout of the OpenTelemetry Collector clickhouseexporter's otel_traces,
-- so tools that read that table (Grafana's ClickHouse trace view) read this one.
{% call table("otel_traces", shard_by=by_partition) %}
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
    {{ delivery_columns(defaults=false) }},
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000{% endcall %};

{% call table("llm_calls", shard_by=by_partition) %}
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
    {{ delivery_columns(defaults=false) }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (service, model, ts)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};

{% call table("ingest_errors", shard_by=by_partition) %}
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
    {{ delivery_columns(defaults=false) }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (stage, ts)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};
