{% from "macros.sql" import delivery_columns %}
-- Evaluation results (issue 19): one row per result, from a `gen_ai.evaluation.result` span event
-- (OTel GenAI semantic conventions 1.38+), an OpenInference EVALUATOR span, or a score a common SDK
-- carries as span attributes (processors/core/evaluations.py names each source). Fenced per Kafka
-- source like llm_calls. The evaluated call's dimensions come from the span the result is attached
-- to (its LLM call when it is one); empty when that span does not say.
-- score_value NULL: the result carries only a label (or neither, with error_type set).
{% call table("llm_evaluations", shard_by=by_partition) %}
(
    ts DateTime64(9, 'UTC') COMMENT 'event time of the result (the evaluated span''s start when the result has none)',
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)) COMMENT 'the evaluated span',
    evaluator LowCardinality(String) COMMENT 'gen_ai.evaluation.name',
    score_value Nullable(Float64),
    score_label LowCardinality(String),
    explanation String CODEC(ZSTD(1)),
    error_type LowCardinality(String),
    service LowCardinality(String),
    model LowCardinality(String),
    prompt_name LowCardinality(String),
    prompt_version LowCardinality(String),
    agent LowCardinality(String),
    source LowCardinality(String) COMMENT 'event | evaluator_span | attribute',
    {{ delivery_columns(defaults=false) }}
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (service, evaluator, ts)
SETTINGS non_replicated_deduplication_window = 1000{% endcall %};
