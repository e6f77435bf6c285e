{% from "macros.sql" import delivery_columns %}
-- Agent runs and runaway findings (issue 19; processors/core/agents/). Both tables are written by the
-- agent-run stage from the trace-keyed agent-span topic, not fenced by offset: a restart replays every
-- record of a run still open, and may rebuild part of a run closed just before the crash. Every row of
-- one run is computed from a subset of the run's one span set, so the row with the most spans is the
-- complete one: ReplacingMergeTree keeps it (version `spans`). Readers use FINAL (or argMax by spans):
-- rows of one run may sit in different partitions until they are read.
--
-- agent_runs: one row per run (a trace with agent, tool or LLM spans), written when the run closes
-- (event-time inactivity gap, `agents.gap_s`, after the allowed lateness). cost is exact and NULL when
-- no call of the run was priced (unpriced_calls counts the others, as llm_usage_1m does).
-- truncated: the run lost spans to the memory bounds (`agents.max_spans_per_run`, or it was closed
-- early because `agents.max_open_runs` runs were open).
{% call table("agent_runs", shard_by="cityHash64(trace_id)") %}
(
    trace_id String,
    service LowCardinality(String) COMMENT 'service of the run''s top span',
    root_agent LowCardinality(String) COMMENT 'outermost agent; empty for a trace of LLM calls without an agent span',
    user_id String COMMENT 'user.id / enduser.id of the run''s calls; empty when none says',
    conversation_id String COMMENT 'gen_ai.conversation.id / session.id of the run''s calls',
    start_ts DateTime64(9, 'UTC'),
    end_ts DateTime64(9, 'UTC'),
    duration_ms Float64,
    spans UInt32 COMMENT 'distinct spans the row was computed from: the version',
    agent_invocations UInt32,
    llm_calls UInt32,
    tool_calls UInt32,
    tool_calls_by_name Map(String, UInt32),
    mcp_tool_calls UInt32,
    input_tokens UInt64,
    output_tokens UInt64,
    cost Nullable(Decimal(38, 12)) COMMENT 'USD over the priced calls; NULL when no call was priced',
    unpriced_calls UInt32,
    errors UInt32 COMMENT 'spans with status ERROR',
    models UInt16 COMMENT 'distinct billed models',
    agent_depth UInt16 COMMENT 'deepest nesting of agent spans (1 = one agent, no sub-agent)',
    truncated Bool,
    closed_at DateTime64(3, 'UTC') COMMENT 'wall time the stage closed the run',
    {{ delivery_columns() }}
)
ENGINE = ReplacingMergeTree(spans)
PARTITION BY toYYYYMM(start_ts)
ORDER BY trace_id
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};

-- agent_anomalies: a runaway finding per run, kind and subject, written as soon as its threshold is
-- crossed (final = false) and again when the run closes (final = true, over all the run's spans).
-- kind: tool_loop (subject '<tool> <arguments digest>', count = identical calls) | llm_calls (count =
-- calls) | cost | duration. tokens and cost: the LLM calls that started within [first_ts, last_ts].
-- version = spans * 2 + final: the final finding replaces the early ones.
{% call table("agent_anomalies", shard_by="cityHash64(trace_id)") %}
(
    trace_id String,
    kind LowCardinality(String),
    subject String,
    service LowCardinality(String),
    root_agent LowCardinality(String),
    count UInt32,
    threshold String,
    first_ts DateTime64(9, 'UTC'),
    last_ts DateTime64(9, 'UTC'),
    input_tokens UInt64,
    output_tokens UInt64,
    cost Nullable(Decimal(38, 12)),
    spans UInt32,
    final Bool,
    version UInt64 COMMENT 'spans * 2 + final',
    detected_at DateTime64(3, 'UTC'),
    {{ delivery_columns() }}
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(first_ts)
ORDER BY (trace_id, kind, subject)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};
