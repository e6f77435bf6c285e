"""Row builders for llm_calls, llm_evaluations and ingest_errors (otel_traces is filled by ClickHouse from raw OTLP).

Each takes already-decoded objects and returns columnar TableRows; the caller
appends the delivery columns (_ingest_source, _ingest_offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from processors.core.evaluations import Evaluation
from processors.core.records import LLMCall
from processors.core.tables import TableRows

__all__ = ["LLM_CALLS_COLUMNS", "LLM_EVALUATIONS_COLUMNS", "INGEST_ERRORS_COLUMNS", "call_rows", "evaluation_rows"]

LLM_CALLS_COLUMNS = [
    "ts",
    "trace_id",
    "span_id",
    "service",
    "environment",
    "team",
    "provider",
    "request_model",
    "response_model",
    "model",
    "operation",
    "prompt_name",
    "prompt_version",
    "agent",
    "conversation_id",
    "user_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost",
    "reported_cost",
    "pricing_entry",
    "duration_ms",
    "ttft_ms",
    "status",
    "error_type",
    "finish_reason",
    "convention",
    "pricing_source",
    "pricing_version",
    "pricing_region",
    "service_tier",
    "pricing_assumption",
]

LLM_EVALUATIONS_COLUMNS = [
    "ts",
    "trace_id",
    "span_id",
    "evaluator",
    "score_value",
    "score_label",
    "explanation",
    "error_type",
    "service",
    "model",
    "prompt_name",
    "prompt_version",
    "agent",
    "source",
]

INGEST_ERRORS_COLUMNS = [
    "ts",
    "stage",
    "reason",
    "service",
    "trace_id",
    "span_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "payload_bytes",
    "dead_lettered",
]


# Column names are LLMCall attribute names (the `model` property included), except ts.
_CALL_FIELDS = attrgetter(*("ts_ns" if name == "ts" else name for name in LLM_CALLS_COLUMNS))


def call_rows(calls: Sequence[LLMCall]) -> TableRows:
    if not calls:
        return TableRows("llm_calls", list(LLM_CALLS_COLUMNS))
    # One tuple per call, transposed: both loops run in C.
    return TableRows(
        "llm_calls", list(LLM_CALLS_COLUMNS), [list(column) for column in zip(*map(_CALL_FIELDS, calls), strict=True)]
    )


# Column names are Evaluation attribute names, except ts.
_EVALUATION_FIELDS = attrgetter(*("ts_ns" if name == "ts" else name for name in LLM_EVALUATIONS_COLUMNS))


def evaluation_rows(evaluations: Sequence[Evaluation]) -> TableRows:
    if not evaluations:
        return TableRows("llm_evaluations", list(LLM_EVALUATIONS_COLUMNS))
    return TableRows(
        "llm_evaluations",
        list(LLM_EVALUATIONS_COLUMNS),
        [list(column) for column in zip(*map(_EVALUATION_FIELDS, evaluations), strict=True)],
    )
