"""Assemble the per-call stages from settings: normalise, time, price, aggregate."""

from __future__ import annotations

from collections.abc import Sequence

from llmops.config import Settings
from processors.latency import latency_rows, ttft_ms_from_span
from processors.normalize import NormalizeOptions
from processors.pipeline import CallStages
from processors.pricing import PricingCatalog
from processors.records import LLMCall, SpanView
from processors.usage import usage_rows
from sinks.clickhouse.batches import TableRows

__all__ = ["build_call_stages"]


def _set_ttft(span: SpanView, call: LLMCall) -> None:
    call.ttft_ms = ttft_ms_from_span(span)


def _latency_table(calls: Sequence[LLMCall]) -> TableRows:
    rows = latency_rows(calls)
    return TableRows("llm_latency_1m", list(rows.column_names), [list(column) for column in rows.column_data()])


def build_call_stages(settings: Settings) -> CallStages:
    user_files = [settings.processor.pricing_file] if settings.processor.pricing_file else []
    catalog = PricingCatalog.load(user_files)
    return CallStages(
        normalize_options=NormalizeOptions(),
        enrichers=[_set_ttft, catalog.enrich],
        aggregators={"llm_usage_1m": usage_rows, "llm_latency_1m": _latency_table},
    )
