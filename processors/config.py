"""The processor stage's config (`[processor]`): batching, commits, pricing and budget files."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from processors.core.config import ConfigSection

__all__ = ["ProcessorSettings"]


class ProcessorSettings(ConfigSection):
    batch_max_records: int = Field(
        32,
        ge=1,
        description="Kafka records per processing batch (one ClickHouse insert per table); bounds the worker's memory.",
    )
    batch_max_wait_s: float = Field(
        0.5, gt=0, description="Longest a record waits for its batch to fill before the batch is processed as it is."
    )
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the worker commits the Kafka offsets of stored records; a worker killed between two "
        "commits leaves its next owner that much to read again (skipped by the fences of a shared store).",
    )
    pricing_file: Path | None = Field(
        None, description="Extra pricing catalog YAML; its entries override the built-in ones."
    )
    pricing_snapshot_file: Path | None = Field(
        None,
        description="Base price snapshot (genai-prices data JSON) written by `llmops pricing update`. "
        "Unset: <data_dir>/pricing-snapshot.json if it exists, else the snapshot the installed genai-prices ships. "
        "Never fetched by the worker.",
    )
    pricing_reload_s: float = Field(
        5.0,
        ge=0,
        description="How often the worker checks the pricing file and the snapshot for changes "
        "(0 = never: restart to reload).",
    )
    budgets_file: Path | None = Field(
        None, description="Budgets YAML; the worker writes budget_status from it periodically."
    )
    budget_interval_s: float = Field(60.0, gt=0, description="How often the worker recomputes budget status.")
