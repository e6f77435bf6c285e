"""Shared timing for the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_seconds"]


def median_seconds(fn: Callable[[], object], repeat: int, *, warmup: bool = False) -> float:
    """Median wall time of `repeat` calls (after one untimed call when `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
