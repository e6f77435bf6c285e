"""Change events mean a change: a steady mix gives none, a switch or a model that takes a share gives one.

The pure drift tracker (no broker) is fed 30 minutes of event time the way the drift worker is:
batches of a few seconds of calls, the wall clock following event time, windows closed after
every batch. Each service calls 5 models and runs 3 prompt versions at once (an A/B test of v2
and v3 for one prompt, v1 of another).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from processors.core.drift.changes import ChangeConfig, ChangeDetector
from processors.core.drift.stream import DriftStageConfig, DriftTracker
from tests.test_drift_stream import assert_judged_against_the_past

T0 = 1_764_000_000 // 900 * 900
MINUTES = 30
RATE = 2  # calls per second and service
MODELS = (
    ("gpt-4o-2024-08-06", 0.35),
    ("claude-sonnet-4-20250514", 0.25),
    ("gemini-2.5-flash", 0.2),
    ("o4-mini-2025-04-16", 0.12),
    ("acme-llama-ft-v3", 0.08),
)
PROMPTS = (("answer", ("v2", "v3"), 0.7), ("summarize", ("v1",), 0.3))
_ids = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def _call(ts_ns: int, model: str, prompt: str, version: str) -> dict[str, Any]:
    i = next(_ids)
    return {
        "ts_ns": ts_ns,
        "span_id": f"{i:016x}",
        "trace_id": f"{i:032x}",
        "model": model,
        "prompt_name": prompt,
        "prompt_version": version,
        "output_tokens": 40,
        "ttft_ms": 300.0,
        "finish_reason": "stop",
        "attributes": {"gen_ai.output.messages": "ok"},
    }


def _traffic(
    seed: int, switch_at_s: float | None = None, added_at_s: float | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Calls per service in event-time order. `switch_at_s`: svc-a's answer prompt goes v3 -> v4 (v2 stays).
    `added_at_s`: svc-a's answer prompt starts sending 20 % of its calls to a sixth model."""
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {}
    for service in ("svc-a", "svc-b"):
        calls = []
        for i in range(MINUTES * 60 * RATE):
            offset_s = i / RATE + rng.random() / RATE
            ts_ns = (T0 + 1) * 10**9 + int(offset_s * 1e9)
            prompt, versions, _ = rng.choices(PROMPTS, weights=[p[2] for p in PROMPTS])[0]
            version = rng.choice(versions)
            model = rng.choices([m for m, _ in MODELS], weights=[w for _, w in MODELS])[0]
            if service == "svc-a" and prompt == "answer":
                if switch_at_s is not None and offset_s >= switch_at_s and version == "v3":
                    version = "v4"
                if added_at_s is not None and offset_s >= added_at_s and rng.random() < 0.2:
                    model = "mycorp-summarizer-v2"
            calls.append(_call(ts_ns, model, prompt, version))
        out[service] = calls
    return out


def _run(
    traffic: dict[str, list[dict[str, Any]]], batch_s: float = 5.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed batches of `batch_s` of event time, service by service, as the drift worker would; the wall
    clock is 2 s behind the newest event. Returns (change events, drift rows)."""
    clock = Clock()
    tracker = DriftTracker(
        DriftStageConfig(window_s=300, lateness_s=10, idle_close_s=60, reservoir_size=50), clock=clock
    )
    events: list[dict[str, Any]] = []
    drift: list[dict[str, Any]] = []
    end_ns = (T0 + 1 + MINUTES * 60) * 10**9
    batch_ns = int(batch_s * 1e9)
    for start in range(T0 * 10**9, end_ns + batch_ns, batch_ns):
        clock.now = (start + batch_ns) / 1e9 + 2
        for service, calls in traffic.items():
            batch = [c for c in calls if start <= c["ts_ns"] < start + batch_ns]
            if batch:
                tracker.add(service, batch)
        rows, changes = tracker.close()
        events += [dict(zip(changes.column_names, row, strict=True)) for row in zip(*changes.columns, strict=True)]
        drift += [dict(zip(rows.column_names, row, strict=True)) for row in zip(*rows.columns, strict=True)]
    clock.now += 3600  # traffic stopped: idle keys close their windows
    rows, changes = tracker.close()
    events += [dict(zip(changes.column_names, row, strict=True)) for row in zip(*changes.columns, strict=True)]
    return events, drift + [dict(zip(rows.column_names, row, strict=True)) for row in zip(*rows.columns, strict=True)]


def test_steady_mix_of_models_and_prompt_versions_gives_no_change_events() -> None:
    events, drift = _run(_traffic(seed=1))
    assert events == []
    assert drift  # windows were judged meanwhile, each against its own past
    assert_judged_against_the_past(drift)


@pytest.mark.parametrize("batch_s", [2.0, 5.0])
def test_a_real_switch_inside_the_mix_gives_exactly_one_event_at_its_first_call(batch_s: float) -> None:
    """Batches of 2 s put the last v3 call and the first v4 call in different batches (the switch is at
    a batch boundary): the old value's silence is then judged before the new value's persistence."""
    traffic = _traffic(seed=2, switch_at_s=15 * 60 - 1)
    first_v4 = min((c for c in traffic["svc-a"] if c["prompt_version"] == "v4"), key=lambda c: c["ts_ns"])
    events, drift = _run(traffic, batch_s)
    assert [(e["service"], e["kind"], e["old_value"], e["new_value"], e["prompt_name"]) for e in events] == [
        ("svc-a", "prompt_version", "v3", "v4", "answer")
    ]
    (event,) = events
    assert abs(event["ts"] - first_v4["ts_ns"]) <= 10**9 and (event["trace_id"], event["span_id"]) == (
        first_v4["trace_id"],
        first_v4["span_id"],
    )
    assert_judged_against_the_past(drift)


def test_a_model_added_to_the_mix_that_carries_a_fifth_gives_one_event() -> None:
    traffic = _traffic(seed=3, added_at_s=12 * 60)
    first = min((c for c in traffic["svc-a"] if c["model"] == "mycorp-summarizer-v2"), key=lambda c: c["ts_ns"])
    events, _ = _run(traffic)
    assert [(e["service"], e["kind"], e["old_value"], e["new_value"], e["prompt_name"]) for e in events] == [
        ("svc-a", "response_model", "", "mycorp-summarizer-v2", "answer")
    ]
    assert events[0]["ts"] == first["ts_ns"]


def test_a_value_that_carried_the_key_and_stops_is_one_event() -> None:
    """A model that took 35 % of a key's calls disappears (the others take over): one stop event."""
    traffic = _traffic(seed=4)
    cut = (T0 + 1 + 15 * 60) * 10**9
    kept = {
        s: [c for c in calls if not (s == "svc-b" and c["model"] == MODELS[0][0] and c["ts_ns"] >= cut)]
        for s, calls in traffic.items()
    }
    last = max(c["ts_ns"] for c in kept["svc-b"] if c["model"] == MODELS[0][0] and c["prompt_name"] == "answer")
    events, _ = _run(kept)
    stops = [(e["service"], e["kind"], e["old_value"], e["new_value"], e["prompt_name"]) for e in events]
    assert sorted(stops) == [
        ("svc-b", "response_model", MODELS[0][0], "", "answer"),
        ("svc-b", "response_model", MODELS[0][0], "", "summarize"),
    ]
    assert min(e["ts"] for e in events if e["prompt_name"] == "answer") == last


def test_two_models_called_in_turn_are_a_mix() -> None:
    """The user's app that calls two models in turn got "claude-sonnet-4-... -> mycorp-summarizer-v2"."""
    detector = ChangeDetector(ChangeConfig(persist_s=60, lateness_s=0, idle_s=1e9))
    models = ("claude-sonnet-4-20250514", "mycorp-summarizer-v2")
    for i in range(2000):
        ts = (T0 + i) * 10**9
        detector.observe("app", "", "response_model", models[i % 2], 1, ts, ts, "t", "s", models[i % 2], now=T0 + i)
    assert detector.decide(T0 + 2000) == []
