"""Event-time tumbling windows: which window a call belongs to, and when a window may close.

One definition for every stage that buckets calls by time (usage and latency per minute, the
drift sender's sieve and tallies, the drift tracker's windows), so a call 1 ns before a
boundary lands in the same window everywhere. Windows are aligned to the Unix epoch and
computed in integers: a float would put a call 1 ns before a boundary after it.

Following Bytewax's split of windowing into a clock, a windower and an aggregator, `Window`
is the windower plus the lateness rule; the clock (wall time in Unix seconds) is injectable
so tests advance it by hand. Timestamps are Unix nanoseconds in UTC (the span start).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["MINUTE", "NS_PER_S", "Window"]

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Window:
    """Tumbling windows of `size_s` seconds of event time, closed `lateness_s` after the newest event passed them.

    `index`/`start_s` bucket one timestamp, `starts_s` a numpy array of them (latency's vectorised
    path). `watermark` and `closed` say when a window is complete: a key's watermark is its newest
    event time minus the lateness, and after `idle_s` without arrivals the clock advances it, so a
    quiet key still closes its windows.
    """

    size_s: int
    lateness_s: float = 0.0
    clock: Callable[[], float] = field(default=time.time, compare=False)
    size_ns: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if type(self.size_s) is not int or self.size_s <= 0:
            raise ValueError(f"window size must be a positive whole number of seconds, not {self.size_s!r}")
        if not self.lateness_s >= 0:
            raise ValueError(f"window lateness must be >= 0 s, not {self.lateness_s!r}")
        object.__setattr__(self, "size_ns", self.size_s * NS_PER_S)

    def index(self, ts_ns: int) -> int:
        """The window number of a Unix-ns timestamp (floor, negatives included)."""
        return ts_ns // self.size_ns

    def start_s(self, ts_ns: int) -> int:
        """Start of the window holding `ts_ns`, in Unix seconds."""
        return ts_ns // self.size_ns * self.size_s

    def starts_s(self, ts_ns: ArrayLike) -> NDArray[np.int64]:
        """`start_s` of each timestamp of an array."""
        return (np.asarray(ts_ns, dtype=np.int64) // self.size_ns) * self.size_s

    def end_s(self, start_s: int) -> int:
        return start_s + self.size_s

    def watermark(self, max_event_s: float, last_arrival_s: float, idle_s: float) -> float:
        """Event time (Unix s) up to which a key's calls are complete: its newest event minus the lateness;
        once nothing arrived for `idle_s` of wall-clock time, at least the clock minus the lateness."""
        mark = max_event_s - self.lateness_s
        now = self.clock()
        if now - last_arrival_s >= idle_s:
            mark = max(mark, now - self.lateness_s)
        return mark

    def closed(self, start_s: int, watermark_s: float) -> bool:
        """Whether the window opening at `start_s` is complete under `watermark_s` (a call of it is late)."""
        return start_s + self.size_s <= watermark_s


MINUTE = Window(60)
