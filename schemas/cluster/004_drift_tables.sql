-- Cluster variant of schemas/migrations/004_drift_tables.sql: llm_drift, change_events.
-- The drift stage writes these rows without delivery columns (_ingest_source stays '', no fences):
-- a retried insert is dropped by its content-derived insert_deduplication_token. The sharding keys are
-- deterministic, so a retry splits into the same per-shard blocks and every shard deduplicates its own.
-- They keep one key's rows on one shard (a key's history, one service's change events together).
-- If the drift stage ever fences by source, shard these by the source's partition like 001.
CREATE TABLE IF NOT EXISTS llm_drift_local ON CLUSTER '{cluster}'
(
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    service LowCardinality(String),
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    signal LowCardinality(String),
    statistic LowCardinality(String),
    value Float64,
    p_value Nullable(Float64),
    threshold Float64,
    drifted Bool,
    n_ref UInt32,
    n_cur UInt32,
    reference String,
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/llm_drift_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, model, prompt_name, prompt_version, window_start, signal, statistic);

CREATE TABLE IF NOT EXISTS llm_drift ON CLUSTER '{cluster}'
(
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    service LowCardinality(String),
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    signal LowCardinality(String),
    statistic LowCardinality(String),
    value Float64,
    p_value Nullable(Float64),
    threshold Float64,
    drifted Bool,
    n_ref UInt32,
    n_cur UInt32,
    reference String,
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = Distributed('{cluster}', currentDatabase(), llm_drift_local, cityHash64(service, model, prompt_name, prompt_version));

CREATE TABLE IF NOT EXISTS change_events_local ON CLUSTER '{cluster}'
(
    ts DateTime64(9, 'UTC'),
    service LowCardinality(String),
    kind LowCardinality(String),
    old_value String,
    new_value String,
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    trace_id String,
    span_id String,
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/change_events_local', '{replica}')
PARTITION BY toYYYYMM(ts)
ORDER BY (service, kind, ts);

CREATE TABLE IF NOT EXISTS change_events ON CLUSTER '{cluster}'
(
    ts DateTime64(9, 'UTC'),
    service LowCardinality(String),
    kind LowCardinality(String),
    old_value String,
    new_value String,
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    trace_id String,
    span_id String,
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = Distributed('{cluster}', currentDatabase(), change_events_local, cityHash64(service, kind));
