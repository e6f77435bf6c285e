"""The per-window signals the worker runs on every batch, in the order their tables are written.

A new signal is one module implementing processors/core/signal.py's contract, with a table spec that
types its columns (the migration runner creates the table from it), and one line here
(processors/README.md, "Adding a signal").
"""

from __future__ import annotations

from typing import Any, Final

from processors.core.evaluation_scores import EVALUATION_SCORES
from processors.core.latency import LATENCY
from processors.core.signal import Signal
from processors.core.usage import USAGE

__all__ = ["SIGNALS"]

SIGNALS: Final[tuple[Signal[Any], ...]] = (
    USAGE,
    LATENCY,
    EVALUATION_SCORES,
)
