"""Assemble the per-call stages from settings: normalise, time, price, and the registered signals."""

from __future__ import annotations

from llmops.config import Settings
from processors.core.latency import ttft_ms_from_span
from processors.core.normalize import NormalizeOptions
from processors.core.pipeline import CallStages
from processors.core.pricer import Pricer, PricerSources
from processors.core.records import LLMCall, SpanView
from processors.core.registry import SIGNALS

__all__ = ["build_call_stages", "build_pricer", "pricer_sources"]


def _set_ttft(span: SpanView, call: LLMCall) -> None:
    call.ttft_ms = ttft_ms_from_span(span, problems=call.problems)


def pricer_sources(settings: Settings) -> PricerSources:
    """The files prices come from: the user's pricing file and the base snapshot (see ProcessorSettings)."""
    processor = settings.processor
    snapshot = processor.pricing_snapshot_file or settings.data_dir / "pricing-snapshot.json"
    return PricerSources(pricing_files=(processor.pricing_file,) if processor.pricing_file else (), snapshot=snapshot)


def build_pricer(settings: Settings) -> Pricer:
    return Pricer.load(pricer_sources(settings), reload_interval_s=settings.processor.pricing_reload_s)


def build_call_stages(settings: Settings, agent_partitions: int = 0) -> CallStages:
    """The stages of `settings`; `agent_partitions` is the agent-span topic's partition count (0: agent runs off)."""
    pricer = build_pricer(settings)
    return CallStages(
        normalize_options=NormalizeOptions(),
        enrichers=[_set_ttft, pricer.enrich],
        signals=SIGNALS,
        agent_partitions=agent_partitions if settings.agents.enabled else 0,
    )
