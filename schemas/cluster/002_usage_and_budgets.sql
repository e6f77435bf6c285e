-- Cluster variant of schemas/migrations/002_usage_and_budgets.sql: llm_usage_1m, llm_usage_totals, budget_status.
--
-- llm_usage_1m: additive partials. _ingest_source is in the sorting key, so rows of different sources
-- never merge anyway: sharding by the source's partition keeps merges and fences exactly as on one node.
-- Readers sum over all shards through the Distributed table (llm_usage_totals does).
CREATE TABLE IF NOT EXISTS llm_usage_1m_local ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset SimpleAggregateFunction(max, UInt64) DEFAULT 0
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/llm_usage_1m_local', '{replica}')
PARTITION BY toYYYYMM(window_start)
ORDER BY (service, model, window_start, environment, team, provider, operation, agent, prompt_name, prompt_version, _ingest_source);

CREATE TABLE IF NOT EXISTS llm_usage_1m ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset SimpleAggregateFunction(max, UInt64) DEFAULT 0
)
ENGINE = Distributed('{cluster}', currentDatabase(), llm_usage_1m_local, toUInt64OrZero(splitByChar('/', toString(_ingest_source))[-1]));

-- Same text as the single-node view: it reads the Distributed llm_usage_1m, so it sums over all shards.
CREATE VIEW IF NOT EXISTS llm_usage_totals ON CLUSTER '{cluster}' AS
SELECT
    window_start,
    service,
    environment,
    team,
    provider,
    model,
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
    sum(cost) AS cost,
    sum(reported_cost_calls) AS reported_cost_calls,
    sum(reported_cost) AS reported_cost
FROM llm_usage_1m
GROUP BY window_start, service, environment, team, provider, model, operation, agent, prompt_name, prompt_version;

-- budget_status: ReplacingMergeTree(computed_at) keeps the newest row per (budget_id, period, period_start)
-- only among rows on the SAME shard, and FINAL works per shard. So this table is sharded by that key,
-- not by source (its rows carry no source: the budget monitor writes them with a time-based token).
CREATE TABLE IF NOT EXISTS budget_status_local ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/budget_status_local', '{replica}', computed_at)
PARTITION BY toYYYYMM(period_start)
ORDER BY (budget_id, period, period_start);

CREATE TABLE IF NOT EXISTS budget_status ON CLUSTER '{cluster}'
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
    _ingest_source LowCardinality(String) DEFAULT '',
    _ingest_offset UInt64 DEFAULT 0
)
ENGINE = Distributed('{cluster}', currentDatabase(), budget_status_local, cityHash64(budget_id, period, period_start));
