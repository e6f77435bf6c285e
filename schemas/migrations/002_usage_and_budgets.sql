{% from "macros.sql" import usage_totals, delivery_columns %}
-- Usage and cost partials per 1-minute event-time window and key, their totals, and budget status.
--
-- llm_usage_1m: every row is an additive PARTIAL (one batch of the usage stage for one window and key).
-- Late spans add one more row; readers always sum (llm_usage_totals does). Money is Decimal(38, 12) USD.
--
-- Engine choice: AggregatingMergeTree with SimpleAggregateFunction columns, not SummingMergeTree.
-- The sink's exactly-once fence reads max(_ingest_offset) per _ingest_source after a restart. A
-- SummingMergeTree would either SUM _ingest_offset (UInt64 columns are summed unless listed out) or,
-- with the summed columns listed, keep an ARBITRARY _ingest_offset of the merged rows; both can lower
-- the fence and make a replay count twice. Here background merges sum the counters and the cost,
-- keep max(_ingest_offset), and _ingest_source is part of the sorting key so rows of different
-- sources never merge. Inserts take plain values; merges are eventual, so queries still sum().
{% call table("llm_usage_1m", shard_by=by_partition) %}
(
    window_start DateTime('UTC'),
    service LowCardinality(String),
    environment LowCardinality(String),
    team LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    operation LowCardinality(String),
    agent LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    calls SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    input_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'includes cache reads and writes',
    output_tokens SimpleAggregateFunction(sum, UInt64) COMMENT 'includes reasoning tokens',
    cache_read_tokens SimpleAggregateFunction(sum, UInt64),
    cache_write_tokens SimpleAggregateFunction(sum, UInt64),
    reasoning_tokens SimpleAggregateFunction(sum, UInt64),
    priced_calls SimpleAggregateFunction(sum, UInt64),
    unpriced_calls SimpleAggregateFunction(sum, UInt64) COMMENT 'calls of models with no price: not in cost',
    cost SimpleAggregateFunction(sum, Decimal(38, 12)) COMMENT 'USD over priced calls only',
    reported_cost_calls SimpleAggregateFunction(sum, UInt64),
    reported_cost SimpleAggregateFunction(sum, Decimal(38, 12)) COMMENT 'USD as reported by spans that carry it',
    {{ delivery_columns(offset="SimpleAggregateFunction(max, UInt64)") }}
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, model, window_start, environment, team, provider, operation, agent, prompt_name, prompt_version, _ingest_source)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};

-- Totals per window and key: what dashboards and `llmops report` read. Sums over windows equal
-- sums over llm_calls exactly (same calls, Decimal arithmetic).
CREATE VIEW IF NOT EXISTS llm_usage_totals{{ on_cluster }} AS
{{ usage_totals(
    ["window_start", "service", "environment", "team", "provider", "model", "operation", "agent", "prompt_name", "prompt_version"],
    ["calls", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "priced_calls", "unpriced_calls", "cost", "reported_cost_calls", "reported_cost"]) }};

-- Budget status, recomputed periodically; the newest computed_at per (budget, period, period_start) wins.
-- Read with FINAL (or argMax by computed_at). status: ok | warn | exceeded.
{% call table("budget_status", shard_by="cityHash64(budget_id, period, period_start)") %}
(
    computed_at DateTime64(3, 'UTC'),
    budget_id LowCardinality(String),
    scope_kind LowCardinality(String) COMMENT 'team | environment | service | model',
    scope_value LowCardinality(String),
    period LowCardinality(String) COMMENT 'day | month',
    period_start DateTime('UTC'),
    period_end DateTime('UTC'),
    amount Decimal(38, 12) COMMENT 'USD budget for the period',
    spend Decimal(38, 12) COMMENT 'USD spent so far in the period',
    fraction Float64 COMMENT 'spend / amount, for display only',
    projected Decimal(38, 12) COMMENT 'USD at period end at the current burn rate',
    warn_fraction Float64,
    status LowCardinality(String),
    {{ delivery_columns() }}
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(period_start)
ORDER BY (budget_id, period, period_start)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};
