{% from "macros.sql" import usage_totals %}
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
{% call alter_table("llm_usage_1m") %}
    ADD COLUMN request_model LowCardinality(String) AFTER model,
    ADD COLUMN unpriced_input_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'input tokens of unpriced calls: not in cost' AFTER unpriced_calls,
    ADD COLUMN unpriced_output_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'output tokens of unpriced calls: not in cost' AFTER unpriced_input_tokens,
    MODIFY ORDER BY (service, model, window_start, environment, team, provider, operation, agent, prompt_name, prompt_version, _ingest_source, request_model){% endcall %};

CREATE OR REPLACE VIEW llm_usage_totals{{ on_cluster }} AS
{{ usage_totals(
    ["window_start", "service", "environment", "team", "provider", "model", "request_model", "operation", "agent", "prompt_name", "prompt_version"],
    ["calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "priced_calls", "unpriced_calls", "unpriced_input_tokens", "unpriced_output_tokens", "cost", "reported_cost_calls", "reported_cost"]) }};

{% call alter_table("llm_latency_1m") %}
    ADD COLUMN request_model LowCardinality(String) AFTER model{% endcall %};

-- llm_drift.reference_end: end of the newest window the reference is made of. A verdict is only
-- judged against the past: reference_end <= window_start on every row (also for a pinned reference).
{% call alter_table("llm_drift") %}
    ADD COLUMN reference_end DateTime64(3, 'UTC') COMMENT 'end of the newest window in the reference (<= window_start)' AFTER reference{% endcall %};
