"""The drift tracker as a pure state machine: windows, watermark, references, change events, bounds."""

from __future__ import annotations

import calendar
import itertools
import json
import re
import time

import numpy as np
import pytest

from processors.core.drift.signals import extract_signals
from processors.core.drift.stream import DriftStageConfig, DriftTracker


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


WINDOW = 60
T0 = 1_764_000_000 // WINDOW * WINDOW  # a window boundary, in seconds
_ids = itertools.count()  # every synthetic call is a distinct span, as real ones are


class Clock:
    """Wall clock for the tracker: well after the synthetic event times unless a test moves it."""

    def __init__(self) -> None:
        self.now = float(T0 + 10_000 * WINDOW)

    def __call__(self) -> float:
        return self.now


def _answer(words: int, rng: np.random.Generator, refusal: bool = False) -> str:
    vocab = "order refund shipping account policy delivery status help update details summary options".split()
    text = " ".join(rng.choice(vocab, size=words))
    if refusal:
        text = "I'm sorry, but I can't help with that request. " + text
    return json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}])


def _calls(
    rng: np.random.Generator,
    start_s: float,
    n: int,
    version: str,
    words: float,
    model: str = "m1",
    prompt: str = "answer",
) -> list[dict]:
    ids = [next(_ids) for _ in range(n)]
    return [
        {
            "ts_ns": int((start_s + i * (WINDOW / n)) * 1e9),
            "span_id": f"{ids[i]:016x}",
            "trace_id": f"{ids[i]:032x}",
            "model": model,
            "prompt_name": prompt,
            "prompt_version": version,
            "output_tokens": int(rng.poisson(words * 1.3)),
            "ttft_ms": float(rng.lognormal(5, 0.3)),
            "finish_reason": "stop",
            "attributes": {"gen_ai.output.messages": _answer(max(1, int(rng.normal(words, words * 0.2))), rng)},
        }
        for i in range(n)
    ]


def _tracker(clock: Clock, **overrides) -> DriftTracker:
    return DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=1e9, reservoir_size=400, **overrides), clock=clock
    )


def _rows(table) -> list[dict]:
    return [dict(zip(table.column_names, row, strict=True)) for row in zip(*table.columns, strict=True)]


def assert_judged_against_the_past(rows: list[dict]) -> None:
    """Every verdict's reference ended before the judged window opened (the pinned one included), and its
    text names those windows in full."""
    for r in rows:
        assert r["reference_end"] <= r["window_start"], r
        for end in re.findall(r"\.\.(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)", r["reference"]):
            assert calendar.timegm(time.strptime(end, "%Y-%m-%dT%H:%M:%SZ")) * 1000 <= r["window_start"], r


def test_version_switch_gives_change_event_and_drift_against_previous_version() -> None:
    rng = np.random.default_rng(1)
    clock = Clock()
    tracker = _tracker(clock)
    for w in range(5):
        tracker.add(
            "bot", _calls(rng, T0 + w * WINDOW, 300, "v3", 40, model="m2", prompt="other")
        )  # another key, unchanged
        tracker.add(
            "bot", _calls(rng, T0 + w * WINDOW, 300, "v3" if w < 3 else "v4", 40 if w < 3 else 100)
        )  # v4: longer answers
    tracker.add(
        "bot",
        _calls(rng, T0 + 5 * WINDOW + 10, 5, "v4", 100) + _calls(rng, T0 + 5 * WINDOW + 10, 5, "v3", 40, "m2", "other"),
    )
    drift, changes = tracker.close()
    first_v4 = T0 + 3 * WINDOW  # the first v4 call of the stream
    assert [(e[1], e[2], e[3], e[4], e[6]) for e in zip(*changes.columns, strict=True)] == [
        ("bot", "prompt_version", "v3", "v4", "answer")
    ]
    assert changes.columns[0] == [first_v4 * 10**9]
    tracker.add("bot", _calls(rng, T0 + 5 * WINDOW + 20, 5, "v3", 40))  # back to v3: seen before, not new
    assert len(tracker.close()[1]) == 0
    rows = _rows(drift)
    assert_judged_against_the_past(rows)
    v4 = [r for r in rows if r["prompt_version"] == "v4"]
    assert v4 and any(r["drifted"] for r in v4 if r["signal"] == "answer_length")
    first = [r for r in v4 if r["window_start"] == first_v4 * 1000]
    assert first and all(
        r["reference"] == f"previous version v3: window {_iso(T0 + 2 * WINDOW)}..{_iso(first_v4)}" for r in first
    )
    assert {r["n_cur"] for r in v4 if r["signal"] == "answer_length"} == {300}
    # The first window of a key with no history and no previous version has no reference: no rows.
    assert not [r for r in rows if r["model"] == "m2" and r["window_start"] == T0 * 1000]


def test_same_distribution_does_not_drift_and_reference_is_own_history() -> None:
    rng = np.random.default_rng(2)
    clock = Clock()
    tracker = _tracker(clock)
    for w in range(4):
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 300, "v1", 40))
    tracker.add("bot", _calls(rng, T0 + 4 * WINDOW + 10, 1, "v1", 40))
    drift, changes = tracker.close()
    rows = [dict(zip(drift.column_names, row, strict=True)) for row in zip(*drift.columns, strict=True)]
    assert len(changes) == 0
    assert rows and not any(r["drifted"] for r in rows)
    assert {r["window_start"] for r in rows} == {(T0 + w * WINDOW) * 1000 for w in (1, 2, 3)}
    assert all(r["reference"].startswith("own history") for r in rows)
    assert_judged_against_the_past(rows)


def test_late_calls_are_counted_and_idle_clock_closes_windows() -> None:
    rng = np.random.default_rng(3)
    clock = Clock()
    tracker = DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=30, reservoir_size=100), clock=clock
    )
    tracker.add("bot", _calls(rng, T0, 50, "v1", 20))
    tracker.add("bot", _calls(rng, T0 + 3 * WINDOW, 50, "v1", 20))
    before = tracker.calls_seen
    tracker.add("bot", _calls(rng, T0, 10, "v1", 20))  # window 0 already closed by the watermark
    assert tracker.late_calls == 10 and tracker.calls_seen == before + 10
    clock.now += 60  # nothing arrives: after idle_close_s the wall clock closes window 3
    assert_judged_against_the_past(_rows(tracker.close()[0]))
    tracker.add("bot", _calls(rng, T0 + 3 * WINDOW, 1, "v1", 20))
    assert tracker.late_calls == 11


def test_memory_is_bounded_per_key_and_in_key_count() -> None:
    rng = np.random.default_rng(4)
    clock = Clock()
    tracker = DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=1e9, reservoir_size=50, max_keys=3), clock=clock
    )
    for k in range(5):
        tracker.add("bot", _calls(rng, T0, 500, f"v{k}", 10))
    assert tracker.live_keys == 3 and tracker.evicted_keys == 2
    state = tracker._keys.get(next(iter(tracker._keys.keys())))
    assert state is not None and all(len(w.sample) == 50 and w.seen == 500 for w in state.open.values())


def test_pinned_window_becomes_the_reference() -> None:
    rng = np.random.default_rng(6)
    clock = Clock()
    tracker = _tracker(clock)
    for w in range(3):
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 200, "v1", 40))
    tracker.add("bot", _calls(rng, T0 + 3 * WINDOW + 10, 1, "v1", 40))
    tracker.close()
    from processors.core.drift.stream import DriftKey

    key = DriftKey("bot", "m1", "answer", "v1")
    assert tracker.pin(key)
    assert not tracker.pin(DriftKey("bot", "m1", "answer", "v9"))  # no closed window yet
    tracker.add("bot", _calls(rng, T0 + 3 * WINDOW, 200, "v1", 40))
    tracker.add("bot", _calls(rng, T0 + 5 * WINDOW, 1, "v1", 40))
    drift, _ = tracker.close()
    rows = _rows(drift)
    assert rows and {r["reference"] for r in rows} == {f"pinned reference (windows up to {_iso(T0 + 3 * WINDOW)})"}
    assert_judged_against_the_past(rows)


def test_history_is_trimmed_to_twice_the_reservoir() -> None:
    rng = np.random.default_rng(7)
    clock = Clock()
    tracker = DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=1e9, reservoir_size=100, history_windows=8),
        clock=clock,
    )
    rows = []
    for w in range(12):
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 150, "v1", 20))
        rows += _rows(tracker.close()[0])
    assert rows
    assert_judged_against_the_past(rows)
    from processors.core.drift.stream import DriftKey

    state = tracker._keys.get(DriftKey("bot", "m1", "answer", "v1"))
    assert state is not None and len(state.history) == 8
    assert sum(len(w.sample) for w in state.history) <= 200
    assert all(w.seen == 150 for w in state.history)


def _llm_spans(n: int, services: tuple[str, ...], text: str = "x" * 3000) -> tuple[list, list]:
    from processors.core.records import LLMCall, SpanView

    spans, calls = [], []
    for i in range(n):
        attrs = {"gen_ai.output.messages": text, "gen_ai.request.model": "m", "unrelated.attr": "dropped"}
        spans.append(SpanView(f"{i:032x}", f"{i:016x}", "", "chat m", 3, i, i + 1, 0, "", attrs, {"service.name": "s"}))
        calls.append(
            LLMCall(
                ts_ns=T0 * 10**9 + i,
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                service=services[i % len(services)],
                response_model="m",
            )
        )
    return calls, spans


def test_drift_records_are_split_under_the_size_limit_and_decode_back() -> None:
    from processors.core.drift.wire import DriftSender, decode_payload

    calls, spans = _llm_spans(300, ("t", "s"))
    records = DriftSender(WINDOW, sample_size=1000, max_windows=8).payloads(calls, spans, max_bytes=100_000)
    assert all(len(value) <= 100_000 for _, value in records) and len(records) > 2
    decoded = [decode_payload(value) for _, value in records]
    assert all(service == record.service for (service, _), record in zip(records, decoded, strict=True))
    ids = sorted(call["span_id"] for record in decoded for call in record.calls)
    assert ids == sorted(c.span_id for c in calls)  # fewer calls than the sample size: all are sent
    assert all(set(call["attributes"]) == {"gen_ai.output.messages"} for record in decoded for call in record.calls)
    assert sorted((r.service, t.call_count) for r in decoded for t in r.tallies) == [("s", 150), ("t", 150)]


def test_an_openinference_answer_reaches_the_drift_signals() -> None:
    """Normalizer -> DriftSender -> wire -> the attributes the tracker extracts signals from (issue 14)."""
    from processors.core.drift.wire import DriftSender, decode_payload
    from processors.core.normalize import normalize_call
    from processors.core.records import SpanView

    answer = "I'm sorry, I can't help with that request."
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.token_count.prompt": 12,
        "llm.token_count.completion": 9,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": answer,
        "llm.finish_reason": "length",
    }
    span = SpanView(
        "ab" * 16, "cd" * 8, "", "ChatCompletion", 1, T0 * 10**9, T0 * 10**9 + 1, 0, "", attrs, {"service.name": "bot"}
    )
    call = normalize_call(span)
    assert call is not None and call.status == "ok"
    [(_, value)] = DriftSender(WINDOW, sample_size=10, max_windows=8).payloads([call], [span])
    [sent] = decode_payload(value).calls
    signals = extract_signals(sent["attributes"])
    assert signals.answer_length == len(answer) and signals.refusal is True
    assert signals.answer_embedding is not None
    assert signals.finish_reason == "length"


def test_sieved_records_give_the_tracker_the_same_windows_as_every_call() -> None:
    """Two decoding workers send only what their sieves pass; the drift worker ends with the same
    samples, counts and change events as a tracker fed every call."""
    from processors.core.drift.stream import DriftKey
    from processors.core.drift.wire import DriftSender, decode_payload
    from processors.core.records import LLMCall, SpanView

    rng = np.random.default_rng(11)
    everything = [
        c
        for v, words in (("v1", 20), ("v2", 60))
        for w in range(2)
        for c in _calls(rng, T0 + w * WINDOW, 3000, v, words)
    ]
    order = rng.permutation(len(everything))
    calls = [everything[i] for i in order]
    config = DriftStageConfig(
        window_s=WINDOW, lateness_s=10 * WINDOW, idle_close_s=1e9, reservoir_size=400
    )  # shuffled: nothing late
    direct, sieved = DriftTracker(config, clock=Clock()), DriftTracker(config, clock=Clock())
    senders = [DriftSender(WINDOW, sample_size=400, max_windows=8) for _ in range(2)]
    sent = 0
    for start in range(0, len(calls), 500):  # batches, alternating between the two workers
        batch = calls[start : start + 500]
        direct.add("bot", batch)
        llm_calls = [
            LLMCall(
                ts_ns=c["ts_ns"],
                trace_id=c["trace_id"],
                span_id=c["span_id"],
                service="bot",
                response_model=c["model"],
                prompt_name=c["prompt_name"],
                prompt_version=c["prompt_version"],
                output_tokens=c["output_tokens"],
                ttft_ms=c["ttft_ms"],
                finish_reason=c["finish_reason"],
            )
            for c in batch
        ]
        spans = [SpanView(c["trace_id"], c["span_id"], "", "chat", 3, 0, 1, 0, "", c["attributes"], {}) for c in batch]
        for _, value in senders[(start // 500) % 2].payloads(llm_calls, spans):
            record = decode_payload(value)
            sent += len(record.calls)
            sieved.add(record.service, record.calls, record.tallies)
    # each worker sees 1,500 calls per key and window and sends about k (1 + ln(1500 / k)) of them
    assert sent < 1.2 * 2 * 4 * 400 * (1 + np.log(1500 / 400)) < 0.75 * len(calls)
    for version, start in itertools.product(("v1", "v2"), (T0, T0 + WINDOW)):
        key = DriftKey("bot", "m1", "answer", version)
        a, b = direct._keys.get(key), sieved._keys.get(key)
        assert a is not None and b is not None
        assert a.open[start].seen == b.open[start].seen == 3000
        assert sorted(c.output_tokens for c in a.open[start].sample.items) == sorted(
            c.output_tokens for c in b.open[start].sample.items
        )
        assert sorted(a.open[start].sample._items) == sorted(b.open[start].sample._items)  # the same calls, by priority
    assert direct.calls_seen == sieved.calls_seen == len(calls)
    a_changes, b_changes = direct.close()[1], sieved.close()[1]
    assert a_changes.columns == b_changes.columns  # v1 and v2 run side by side from the start: a mix, no event


def test_watermarks_are_per_key_and_future_clocks_do_not_close_windows() -> None:
    rng = np.random.default_rng(8)
    clock = Clock()
    clock.now = float(T0 + 2 * WINDOW)
    tracker = _tracker(clock)
    tracker.add("bot", _calls(rng, T0 + WINDOW, 50, "v1", 20))  # key A is at window 1
    tracker.add("bot", _calls(rng, T0, 50, "v2", 20))  # key B's older calls are not late: B has its own watermark
    assert tracker.late_calls == 0
    future = _calls(rng, T0 + 50 * WINDOW, 1, "v1", 20)  # a skewed clock, far ahead of the wall clock
    tracker.add("bot", future)
    tracker.add("bot", _calls(rng, T0 + WINDOW, 10, "v1", 20))  # still accepted for key A
    assert tracker.late_calls == 0


def test_an_older_version_is_never_compared_with_its_successor() -> None:
    rng = np.random.default_rng(9)
    clock = Clock()
    tracker = _tracker(clock)
    tracker.add("bot", _calls(rng, T0, 10, "v3", 40))  # v3 first; too few calls to be its own reference
    for w in (1, 2):
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 100, "v4", 100))
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 100, "v3", 40))  # v3 still running after v4 appeared
    tracker.add("bot", _calls(rng, T0 + 4 * WINDOW, 1, "v4", 100))  # v4's windows close first
    first, _ = tracker.close()
    tracker.add("bot", _calls(rng, T0 + 4 * WINDOW, 1, "v3", 40))  # then v3's
    second, _ = tracker.close()
    rows = [
        dict(zip(d.column_names, row, strict=True)) for d in (first, second) for row in zip(*d.columns, strict=True)
    ]
    assert_judged_against_the_past(rows)
    references = {(r["prompt_version"], r["window_start"] // 1000 - T0, r["reference"].split(":")[0]) for r in rows}
    # v4's first window has no past of its own and v3's only past window is too small: no verdict, rather
    # than one against v3's window running at the same time. Its second window is judged against its first.
    assert {(v, w) for v, w, _ in references} == {("v4", 2 * WINDOW), ("v3", 2 * WINDOW)}
    assert ("v4", 2 * WINDOW, "own history") in references
    assert not [ref for version, _, ref in references if version == "v3" and ref.startswith("previous version")]


def test_a_reference_never_comes_from_a_window_that_ends_after_the_judged_one_opened() -> None:
    """The bug on-call saw: window 10:45 of v4 judged against "v3 window 11:00". v3 is seen first, but
    only for a later window (a backfill); v4's windows must not use it."""
    rng = np.random.default_rng(12)
    clock = Clock()
    tracker = DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=30, reservoir_size=400), clock=clock
    )
    tracker.add("bot", _calls(rng, T0 + 3 * WINDOW, 300, "v3", 40))  # first sighting of v3, event time later
    clock.now += 60
    rows = _rows(tracker.close()[0])  # idle: v3's window 3 closes, a candidate reference for v4 from now on
    for w in range(3):
        tracker.add("bot", _calls(rng, T0 + w * WINDOW, 300, "v4", 100))
    clock.now += 60
    rows += _rows(tracker.close()[0])
    assert_judged_against_the_past(rows)
    v4 = {(r["window_start"] // 1000 - T0, r["reference"].split(":")[0]) for r in rows if r["prompt_version"] == "v4"}
    assert v4 == {(WINDOW, "own history"), (2 * WINDOW, "own history")}


def test_key_fields_are_configurable() -> None:
    rng = np.random.default_rng(10)
    clock = Clock()
    coarse = DriftTracker(
        DriftStageConfig(window_s=WINDOW, lateness_s=5, idle_close_s=1e9, key_fields=("model",)), clock=clock
    )
    for w in range(6):
        coarse.add("bot", _calls(rng, T0 + w * WINDOW, 50, "v1" if w < 3 else "v2", 20))
    coarse.add("bot", _calls(rng, T0 + 6 * WINDOW + 10, 1, "v2", 20))
    assert coarse.live_keys == 1  # versions share one key
    assert len(coarse.close()[1]) == 1  # the version change is still a change event
    with pytest.raises(ValueError, match="key fields"):
        DriftTracker(DriftStageConfig(key_fields=("team",)))
