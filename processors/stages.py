"""Assemble the per-call stages from settings: normalise, time, price, aggregate."""

from __future__ import annotations

from llmops.config import Settings
from processors.normalize import NormalizeOptions
from processors.pipeline import CallStages

__all__ = ["build_call_stages"]


def build_call_stages(settings: Settings) -> CallStages:
    return CallStages(normalize_options=NormalizeOptions())
