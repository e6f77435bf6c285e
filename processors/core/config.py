"""The base of every component's config model: unknown keys are errors, assignments are validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigSection"]


class ConfigSection(BaseModel):
    """One section of the settings (`[receiver]`, `[kafka]`, ...), owned by the component it configures."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
