-- Optional retention for a single server (or chDB). Not applied by the migration runner: edit the
-- numbers, then run it yourself, e.g.  clickhouse-client --database llmops --multiquery < single_node.sql
-- MODIFY TTL rewrites TTL info of existing parts (materialize_ttl_after_modify = 1 by default), a
-- background mutation that reads the whole table once. Statements end with a line-final terminator.
--
-- Raw spans: 14 days. Daily partitions and ttl_only_drop_parts = 1 (set in 001): whole parts are dropped.
ALTER TABLE otel_traces MODIFY TTL toDate(Timestamp) + INTERVAL 14 DAY;

-- One row per LLM call: 90 days.
ALTER TABLE llm_calls MODIFY TTL toDate(ts) + INTERVAL 90 DAY;

-- Decode, span and sink errors: 30 days.
ALTER TABLE ingest_errors MODIFY TTL toDate(ts) + INTERVAL 30 DAY;

-- 1-minute windows and drift windows: 400 days (a year-over-year comparison plus a month).
ALTER TABLE llm_usage_1m MODIFY TTL window_start + INTERVAL 400 DAY;
ALTER TABLE llm_latency_1m MODIFY TTL window_start + INTERVAL 400 DAY;
ALTER TABLE llm_drift MODIFY TTL toDateTime(window_start) + INTERVAL 400 DAY;

-- Budget periods: 400 days after the period ended.
ALTER TABLE budget_status MODIFY TTL period_end + INTERVAL 400 DAY;

-- change_events: one row per new prompt version or model, tiny: kept. To expire them anyway:
-- ALTER TABLE change_events MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY
