-- Cluster variant of schemas/migrations/008_requested_model_and_unpriced_usage.sql: the same columns on
-- every `_local` table (the sorting key of llm_usage_1m_local grows by request_model, as on one node) and on
-- the Distributed tables, and the view over the Distributed llm_usage_1m.
ALTER TABLE llm_usage_1m_local ON CLUSTER '{cluster}'
    ADD COLUMN request_model LowCardinality(String) AFTER model,
    ADD COLUMN unpriced_input_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'input tokens of unpriced calls: not in cost' AFTER unpriced_calls,
    ADD COLUMN unpriced_output_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'output tokens of unpriced calls: not in cost' AFTER unpriced_input_tokens,
    MODIFY ORDER BY (service, model, window_start, environment, team, provider, operation, agent, prompt_name, prompt_version, _ingest_source, request_model);

ALTER TABLE llm_usage_1m ON CLUSTER '{cluster}'
    ADD COLUMN request_model LowCardinality(String) AFTER model,
    ADD COLUMN unpriced_input_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'input tokens of unpriced calls: not in cost' AFTER unpriced_calls,
    ADD COLUMN unpriced_output_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'output tokens of unpriced calls: not in cost' AFTER unpriced_input_tokens;

CREATE OR REPLACE VIEW llm_usage_totals ON CLUSTER '{cluster}' AS
SELECT
    window_start,
    service,
    environment,
    team,
    provider,
    model,
    request_model,
    operation,
    agent,
    prompt_name,
    prompt_version,
    sum(calls) AS calls,
    sum(errors) AS errors,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(priced_calls) AS priced_calls,
    sum(unpriced_calls) AS unpriced_calls,
    sum(unpriced_input_tokens) AS unpriced_input_tokens,
    sum(unpriced_output_tokens) AS unpriced_output_tokens,
    sum(cost) AS cost,
    sum(reported_cost_calls) AS reported_cost_calls,
    sum(reported_cost) AS reported_cost
FROM llm_usage_1m
GROUP BY window_start, service, environment, team, provider, model, request_model, operation, agent, prompt_name, prompt_version;

ALTER TABLE llm_latency_1m_local ON CLUSTER '{cluster}'
    ADD COLUMN request_model LowCardinality(String) AFTER model;

ALTER TABLE llm_latency_1m ON CLUSTER '{cluster}'
    ADD COLUMN request_model LowCardinality(String) AFTER model;

ALTER TABLE llm_drift_local ON CLUSTER '{cluster}'
    ADD COLUMN reference_end DateTime64(3, 'UTC') COMMENT 'end of the newest window in the reference (<= window_start)' AFTER reference;

ALTER TABLE llm_drift ON CLUSTER '{cluster}'
    ADD COLUMN reference_end DateTime64(3, 'UTC') COMMENT 'end of the newest window in the reference (<= window_start)' AFTER reference;
