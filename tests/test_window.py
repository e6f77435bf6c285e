"""Window: integer event-time bucketing and the lateness rule, on lists and a clock moved by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.window import MINUTE, NS_PER_S, Window

T0_S = 1_764_000_000  # a minute boundary (divisible by 60 and 900)


def test_boundaries_are_integer_and_floor() -> None:
    w = Window(60)
    boundary = T0_S * NS_PER_S
    times = (boundary - 1, boundary, boundary + 59 * NS_PER_S + 999_999_999, boundary + 60 * NS_PER_S)
    assert [w.start_s(t) for t in times] == [
        T0_S - 60, T0_S, T0_S, T0_S + 60,
    ]  # fmt: skip
    assert w.start_s(-1) == -60 and w.index(-1) == -1  # floor, not truncation toward zero
    # 1 ns before a boundary stays before it where a float would round it over.
    assert float(boundary - 1) / 1e9 // 60 == T0_S // 60
    assert w.index(boundary - 1) == T0_S // 60 - 1


@settings(max_examples=300, deadline=None)
@given(ts=st.lists(st.integers(946_684_800 * NS_PER_S, 7_258_118_400 * NS_PER_S), min_size=1, max_size=50),
       size=st.sampled_from([1, 10, 60, 300, 900, 3600]))  # fmt: skip
def test_scalar_and_array_bucketing_agree_with_calendar_arithmetic(ts: list[int], size: int) -> None:
    w = Window(size)
    expected = []
    for t in ts:
        moment = datetime.fromtimestamp(t // NS_PER_S, tz=UTC)  # whole seconds: the window holds the ns too
        expected.append(int(moment.timestamp()) - int(moment.timestamp()) % size)
    assert [w.start_s(t) for t in ts] == expected
    assert w.starts_s(np.array(ts, dtype=np.int64)).tolist() == expected
    assert [w.index(t) * size for t in ts] == expected
    assert all(w.end_s(s) - s == size for s in expected)


def test_minute_is_the_one_minute_window() -> None:
    assert MINUTE.size_s == 60 and MINUTE.size_ns == 60 * NS_PER_S and MINUTE.lateness_s == 0


def test_watermark_follows_events_then_the_clock_when_idle() -> None:
    now = [float(T0_S)]
    w = Window(60, lateness_s=5, clock=lambda: now[0])
    # Events up to T0 + 70 s, last arrival just now: the watermark trails the newest event by the lateness.
    assert w.watermark(T0_S + 70, last_arrival_s=now[0], idle_s=30) == T0_S + 65
    assert w.closed(T0_S, T0_S + 65)  # [T0, T0+60) is complete
    assert not w.closed(T0_S + 60, T0_S + 65)
    # No arrival for 30 s of wall-clock time: the clock moves the watermark past a stalled key.
    now[0] = T0_S + 200.0
    assert w.watermark(T0_S + 70, last_arrival_s=T0_S + 169, idle_s=30) == T0_S + 195
    assert w.watermark(T0_S + 70, last_arrival_s=T0_S + 171, idle_s=30) == T0_S + 65
    # A clock behind the events never moves the watermark back.
    assert w.watermark(T0_S + 500, last_arrival_s=0, idle_s=30) == T0_S + 495


def test_late_is_decided_by_the_window_end() -> None:
    w = Window(60, lateness_s=10)
    mark = w.watermark(T0_S + 70, last_arrival_s=float("inf"), idle_s=1e9)  # never idle
    assert mark == T0_S + 60
    assert w.closed(w.start_s(T0_S * NS_PER_S + 59 * NS_PER_S), mark)  # its window ended at the mark: late
    assert not w.closed(w.start_s(T0_S * NS_PER_S + 60 * NS_PER_S), mark)


@pytest.mark.parametrize("size", [0, -60, 1.5, True])
def test_bad_sizes_are_refused(size: object) -> None:
    with pytest.raises(ValueError, match="positive whole number"):
        Window(size)  # type: ignore[arg-type]


def test_negative_lateness_is_refused() -> None:
    with pytest.raises(ValueError, match="lateness"):
        Window(60, lateness_s=-1)
