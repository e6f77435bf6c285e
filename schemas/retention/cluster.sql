-- Optional retention for a cluster created with `llmops migrate --print --cluster`: the TTL belongs to the Replicated
-- <table>_local tables (a Distributed table stores nothing). ALTER ... ON CLUSTER on a Replicated table
-- runs once per shard and replicates through Keeper. Not applied by the migration runner: edit the
-- numbers, then run  clickhouse-client --database llmops --multiquery < cluster.sql  on any one node.
--
-- Raw spans: 14 days. Daily partitions and ttl_only_drop_parts = 1 (set in 001): whole parts are dropped.
ALTER TABLE otel_traces_local ON CLUSTER '{cluster}' MODIFY TTL toDate(Timestamp) + INTERVAL 14 DAY;

-- One row per LLM call: 90 days.
ALTER TABLE llm_calls_local ON CLUSTER '{cluster}' MODIFY TTL toDate(ts) + INTERVAL 90 DAY;

-- Decode, span and sink errors: 30 days.
ALTER TABLE ingest_errors_local ON CLUSTER '{cluster}' MODIFY TTL toDate(ts) + INTERVAL 30 DAY;

-- 1-minute windows and drift windows: 400 days (a year-over-year comparison plus a month).
ALTER TABLE llm_usage_1m_local ON CLUSTER '{cluster}' MODIFY TTL window_start + INTERVAL 400 DAY;
ALTER TABLE llm_latency_1m_local ON CLUSTER '{cluster}' MODIFY TTL window_start + INTERVAL 400 DAY;
ALTER TABLE llm_drift_local ON CLUSTER '{cluster}' MODIFY TTL toDateTime(window_start) + INTERVAL 400 DAY;

-- Budget periods: 400 days after the period ended.
ALTER TABLE budget_status_local ON CLUSTER '{cluster}' MODIFY TTL period_end + INTERVAL 400 DAY;

-- change_events: one row per new prompt version or model, tiny: kept. To expire them anyway:
-- ALTER TABLE change_events_local ON CLUSTER '{cluster}' MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY
