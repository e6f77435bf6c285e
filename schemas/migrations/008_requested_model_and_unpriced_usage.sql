-- What on-call reads must be true (issue 16): the requested model beside the billed one, token counts
-- of unpriced calls, and the end of each drift verdict's reference.
--
-- llm_usage_1m / llm_latency_1m: `model` stays the billed model (response model, else the requested
-- one); `request_model` is what the caller asked for. A failed call usually has no response model, so
-- grouping reliability (error rates, latency) by `model` would put failures and successes of one
-- request on different rows. Reliability groups by request_model, cost by model (docs/dashboards.md).
-- request_model joins the end of llm_usage_1m's sorting key (ClickHouse allows appending a column added
-- in the same ALTER, without a default), so partials of different requested models never merge.
-- Rows stored before this migration have request_model = ''.
ALTER TABLE llm_usage_1m
    ADD COLUMN request_model LowCardinality(String) AFTER model,
    ADD COLUMN unpriced_input_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'input tokens of unpriced calls: not in cost' AFTER unpriced_calls,
    ADD COLUMN unpriced_output_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'output tokens of unpriced calls: not in cost' AFTER unpriced_input_tokens,
    MODIFY ORDER BY (service, model, window_start, environment, team, provider, operation, agent, prompt_name, prompt_version, _ingest_source, request_model);

CREATE OR REPLACE VIEW llm_usage_totals AS
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

ALTER TABLE llm_latency_1m
    ADD COLUMN request_model LowCardinality(String) AFTER model;

-- llm_drift.reference_end: end of the newest window the reference is made of. A verdict is only
-- judged against the past: reference_end <= window_start on every row (also for a pinned reference).
ALTER TABLE llm_drift
    ADD COLUMN reference_end DateTime64(3, 'UTC') COMMENT 'end of the newest window in the reference (<= window_start)' AFTER reference;
