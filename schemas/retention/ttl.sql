-- Optional retention (TTL). Not applied by the migration runner: edit the numbers, then print and apply
--   llmops migrate --print --retention [--cluster NAME] | clickhouse-client --database llmops --multiquery
-- On a cluster the TTL goes to the Replicated <table>_local tables, ON CLUSTER (a Distributed table
-- stores nothing); an ALTER ON CLUSTER of a Replicated table runs once per shard and replicates through Keeper.
-- MODIFY TTL rewrites TTL info of existing parts (materialize_ttl_after_modify = 1 by default), a
-- background mutation that reads the whole table once. Same rules as the migrations (../migrations/README.md).
--
-- Raw spans: 14 days. Daily partitions and ttl_only_drop_parts = 1 (set in 001): whole parts are dropped.
{% call alter_table("otel_traces") %}
    MODIFY TTL toDate(Timestamp) + INTERVAL 14 DAY{% endcall %};

-- One row per LLM call: 90 days.
{% call alter_table("llm_calls") %}
    MODIFY TTL toDate(ts) + INTERVAL 90 DAY{% endcall %};

-- Top users and conversations per hour (012): as long as the calls whose exact cost the panel sums.
{% call alter_table("llm_top_spenders_1h") %}
    MODIFY TTL window_start + INTERVAL 90 DAY{% endcall %};

-- One row per evaluation result: 90 days, as the calls they judge.
{% call alter_table("llm_evaluations") %}
    MODIFY TTL toDate(ts) + INTERVAL 90 DAY{% endcall %};

-- Decode, span and sink errors: 30 days.
{% call alter_table("ingest_errors") %}
    MODIFY TTL toDate(ts) + INTERVAL 30 DAY{% endcall %};

-- 1-minute windows and drift windows: 400 days (a year-over-year comparison plus a month).
{% call alter_table("llm_usage_1m") %}
    MODIFY TTL window_start + INTERVAL 400 DAY{% endcall %};

{% call alter_table("llm_latency_1m") %}
    MODIFY TTL window_start + INTERVAL 400 DAY{% endcall %};

{% call alter_table("llm_drift") %}
    MODIFY TTL toDateTime(window_start) + INTERVAL 400 DAY{% endcall %};

-- Budget periods: 400 days after the period ended.
{% call alter_table("budget_status") %}
    MODIFY TTL period_end + INTERVAL 400 DAY{% endcall %};

-- change_events: one row per new prompt version or model, tiny: kept. To expire them anyway, add
-- alter_table("change_events") with MODIFY TTL toDateTime(ts) + INTERVAL 400 DAY.
