-- Users and conversations (issue 19): the end user of each call, and top spenders per hour without a
-- row per user in any aggregate table.
--
-- llm_calls.user_id: `user.id`, `enduser.id`, `enduser.pseudo.id` or OpenLLMetry's association property
-- `user_id` (processors/core/normalize.py); empty when the span does not say. Rows stored before this
-- migration have user_id = ''.
{% call alter_table("llm_calls") %}
    ADD COLUMN user_id String CODEC(ZSTD(1)) COMMENT 'user.id / enduser.id of the call; empty when the span does not say' AFTER conversation_id{% endcall %};

-- llm_top_spenders_1h: per hour, service, environment and team, a heavy-hitter summary of the users and of
-- the conversations that spent the most, weighted by exact cost in integer pico-dollars (cost * 10^12:
-- llm_calls.cost has 12 decimals, so the weight is the cost itself, unrounded; one call's weight is capped
-- at 18,000,000 USD, below UInt64's 1.8 * 10^19, so no cost can make the view refuse an insert).
-- ClickHouse fills it from llm_calls through the view below: it shares llm_calls' exactly-once delivery (a block the sink skips or
-- ClickHouse deduplicates never reaches the view) and costs the worker nothing.
--
-- approx_top_sum(100) is a Space-Saving summary (ClickHouse's topKWeighted with counts): it keeps 300
-- counters and returns the 100 heaviest items, so its size per hour and key is bounded whatever the number
-- of users (~10-12 KB on disk), and states merge (parts, hours, shards: approx_top_sumMerge). Its weights
-- are estimates (exact while an hour and key has fewer items than counters). Readers take its items as
-- candidates and sum their exact cost from llm_calls (the "Top users and conversations" panel does): the
-- money shown is exact, only which users make the list is approximate. Calls without a user (or
-- conversation) and unpriced calls carry no weight. Chosen over a Python heavy-hitter summary the worker would write as
-- signal rows: both find all of the top 10 and 96-100 % of the top 100 on Zipf populations of 10^5-10^6
-- users; this stores 14-28x fewer bytes and costs the worker no CPU (BENCHMARKS.md, "Top spenders"). On a cluster the view runs where the Distributed
-- llm_calls receives the insert, as otlp_ingest's view does.
{% call table("llm_top_spenders_1h", shard_by="cityHash64(service, environment, team)") %}
(
    window_start DateTime('UTC'),
    service LowCardinality(String),
    environment LowCardinality(String),
    team LowCardinality(String),
    users AggregateFunction(approx_top_sum(100), String, UInt64) COMMENT 'user_id by cost in pico-USD',
    conversations AggregateFunction(approx_top_sum(100), String, UInt64) COMMENT 'conversation_id by cost in pico-USD'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, service, environment, team)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_to_top_spenders{{ on_cluster }} TO llm_top_spenders_1h AS
SELECT
    toStartOfHour(ts) AS window_start,
    service,
    environment,
    team,
    approx_top_sumStateIf(100)(user_id, toUInt64(least(ifNull(cost, 0), 18000000) * 1000000000000), user_id != '' AND cost IS NOT NULL) AS users,
    approx_top_sumStateIf(100)(conversation_id, toUInt64(least(ifNull(cost, 0), 18000000) * 1000000000000), conversation_id != '' AND cost IS NOT NULL) AS conversations
FROM llm_calls
GROUP BY window_start, service, environment, team;

-- budget_status: budgets may now name one end user (scope `user`, spend summed from llm_calls.user_id).
{% call alter_table("budget_status") %}
    COMMENT COLUMN scope_kind 'team | environment | service | model | user'{% endcall %};
