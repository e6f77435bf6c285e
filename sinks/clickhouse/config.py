"""The ClickHouse sink's config (`[clickhouse]`): where to write and how often to retry."""

from __future__ import annotations

from pydantic import Field

from processors.core.config import ConfigSection

__all__ = ["ClickHouseSettings"]


class ClickHouseSettings(ConfigSection):
    dsn: str | None = Field(
        None,
        description="clickhouse-connect DSN, e.g. http://user:pass@host:8123. "
        "Unset: embedded chDB under <data_dir>/clickhouse.",
    )
    database: str = Field("llmops", description="Database holding the pipeline's tables.")
    insert_retries: int = Field(8, ge=0, description="Retries of a transient insert failure before the worker stops.")
