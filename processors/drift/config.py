"""The drift stage's config (`[drift]`): windows, reservoirs, keys and change detection."""

from __future__ import annotations

from pydantic import Field, field_validator

from processors.core.config import ConfigSection

__all__ = ["DriftSettings"]


class DriftSettings(ConfigSection):
    enabled: bool = Field(True, description="Run the drift stage (repartitioned by service through Kafka).")
    window_s: int = Field(900, ge=10, description="Drift window length in event-time seconds.")
    lateness_s: float = Field(60.0, ge=0, description="The watermark trails the newest event time by this much.")
    idle_close_s: float = Field(
        30.0, gt=0, description="With no events for this long, wall-clock time advances the watermark."
    )
    reservoir_size: int = Field(
        1000, ge=50, description="Calls sampled per key and window (uniform bottom-k sample by call hash)."
    )
    max_keys: int = Field(
        128,
        ge=1,
        description="Live drift keys kept; least recently used are evicted (counted). "
        "Memory: about 8 MiB per key at reservoir_size 1000.",
    )
    history_windows: int = Field(
        96, ge=1, description="Closed windows per key merged into its reference (96 x 15 min = 24 h)."
    )
    key_fields: list[str] = Field(
        ["model", "prompt_name", "prompt_version"],
        description="What splits drift keys besides the service: any of model, prompt_name, prompt_version.",
    )
    change_persist_s: float = Field(
        120.0,
        gt=0,
        description="A new model, prompt version or embedding model is a change event once it kept "
        "change_min_share of its key's calls this long (event time).",
    )
    change_min_share: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Share of a key's calls (service and prompt name) that makes a value part of its traffic: "
        "new values below it are a mix, not a change.",
    )

    @field_validator("key_fields")
    @classmethod
    def _known_key_fields(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"model", "prompt_name", "prompt_version"}
        if unknown:
            raise ValueError(f"unknown drift key fields {sorted(unknown)}")
        return value
