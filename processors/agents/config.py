"""The agent-run stage's config (`[agents]`): when a run is over, memory bounds, runaway thresholds."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from processors.core.agents.runaway import RunawayRules
from processors.core.agents.runs import RunSettings
from processors.core.config import ConfigSection

__all__ = ["AgentSettings"]


class AgentSettings(ConfigSection):
    enabled: bool = Field(
        True, description="Assemble agent runs (spans re-keyed by trace id through Kafka) and flag runaway agents."
    )
    gap_s: float = Field(
        120.0,
        gt=0,
        description="A run with an agent, tool or step span is over when none of its spans ended for this long "
        "(event time).",
    )
    calls_gap_s: float = Field(
        10.0,
        gt=0,
        description="The same for a trace of LLM calls only (no agent, tool or step span): its calls follow each "
        "other within a request.",
    )
    lateness_s: float = Field(
        10.0,
        ge=0,
        description="The watermark trails the newest span end by this much; spans of a run closed before they "
        "arrived are counted late and left out.",
    )
    idle_close_s: float = Field(
        30.0, gt=0, description="With no agent spans for this long, wall-clock time advances the watermark."
    )
    max_open_runs: int = Field(
        50_000,
        ge=1,
        description="Open runs kept per worker; past it the least recently active is closed early (marked "
        "truncated, counted). Memory: about 9 KB per open run of 16 spans, 1.5 KB for a single LLM call.",
    )
    max_spans_per_run: int = Field(
        2_000, ge=1, description="Spans kept per run; further ones are counted and left out (the run is truncated)."
    )
    loop_repeats: int = Field(
        5, ge=2, description="A tool called with the same arguments this many times in one run is a loop."
    )
    max_llm_calls: int = Field(50, ge=1, description="More LLM calls than this in one run is a runaway finding.")
    max_cost_usd: Decimal = Field(
        Decimal("5"), gt=0, description="A run whose priced calls cost more than this (USD) is a runaway finding."
    )
    max_duration_s: float = Field(900.0, gt=0, description="A run longer than this (seconds) is a runaway finding.")
    batch_max_records: int = Field(500, ge=1, description="Agent-span records read per poll of the stage.")

    def run_settings(self) -> RunSettings:
        return RunSettings(
            gap_s=self.gap_s,
            calls_gap_s=self.calls_gap_s,
            lateness_s=self.lateness_s,
            idle_close_s=self.idle_close_s,
            max_open_runs=self.max_open_runs,
            max_spans_per_run=self.max_spans_per_run,
            rules=RunawayRules(
                loop_repeats=self.loop_repeats,
                max_llm_calls=self.max_llm_calls,
                max_cost_usd=self.max_cost_usd,
                max_duration_s=self.max_duration_s,
            ),
        )
