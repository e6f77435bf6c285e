"""Drift windows on the stream: per-key reservoirs, a watermark, references, change events.

A pure state machine the drift agent feeds (no I/O). Each key has its own
watermark (its newest event time, capped at the wall clock, minus the allowed
lateness; after `idle_close_s` without calls, the wall clock minus the
lateness), so one service's backlog or skewed clock never makes another's
calls late. `add` takes decoded
drift records of one service: tallies that count every call (for the watermark,
window sizes and change events) and the calls that may belong to a window's
sample; `close` returns llm_drift and change_events rows for every window the
watermark passed. Memory is bounded: a bottom-k sample (`sampling.BottomK`) of at
most `reservoir_size` raw calls per live key and window (their signals, the
answer embedding included, are extracted when the window closes, so a busy key
costs no more CPU than a quiet one), at most `max_keys` live
keys (least recently used evicted, counted), and `history_windows` closed
reservoirs per key for the reference.

Reference of a closed window, in order, and always made of the past: only windows
that closed before the judged window opened (`llm_drift.reference_end` <= `window_start`
on every row, and the reference text names the exact windows):
1. a pinned reference for the key, if one was set (`pin` freezes the key's
   reference as it is at that moment);
2. the key's own closed windows of the last `history_windows` (24 h by default),
   merged into one sample, each window weighted by its number of calls;
3. for a new prompt version or model with no history yet: the latest closed window,
   ended before this one opened, of a version of the same service, model and prompt
   first seen before this one, so the dashboard can say "answers drifted after prompt
   v12". Without such a window there is no reference and no verdict.

Evaluation scores: a sampled call brings the scores its span carries about it
(`wire.call_scores`), and each evaluator is one more scalar signal of the key, ``score:<evaluator>``
(its values: every score of the sampled calls), tested like the others (KS, Wasserstein, PSI).

Change events come from `processors.core.drift.changes.ChangeDetector`, fed with the
same tallies (a new value that persists, or one that carried the key and stops;
stamped with the first call's event time).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from processors.core.drift.changes import ChangeConfig, ChangeDetector
from processors.core.drift.sampling import BottomK, KeyRegistry, call_priority
from processors.core.drift.signals import CallSignals, SignalOptions, extract_signals
from processors.core.drift.statistics import (
    DriftConfig,
    DriftResult,
    WindowSample,
    control_across_keys,
    evaluate_window,
)
from processors.core.drift.wire import EMBEDDING_MODEL_ATTRIBUTE, Tally, tally_calls, tally_resolution_s
from processors.core.tables import TableRows
from processors.core.window import Window

__all__ = ["DriftKey", "DriftStageConfig", "DriftTracker", "DRIFT_COLUMNS", "CHANGE_COLUMNS", "KEY_FIELDS"]

DRIFT_COLUMNS = [
    "window_start",
    "window_end",
    "service",
    "model",
    "prompt_name",
    "prompt_version",
    "signal",
    "statistic",
    "value",
    "p_value",
    "threshold",
    "drifted",
    "n_ref",
    "n_cur",
    "reference",
    "reference_end",
]
CHANGE_COLUMNS = ["ts", "service", "kind", "old_value", "new_value", "model", "prompt_name", "trace_id", "span_id"]


KEY_FIELDS = ("model", "prompt_name", "prompt_version")


class DriftKey(NamedTuple):
    service: str
    model: str
    prompt_name: str
    prompt_version: str

    @property
    def lineage(self) -> tuple[str, str, str]:
        """The same prompt of the same model in the same service, whatever its version."""
        return (self.service, self.model, self.prompt_name)


@dataclass(frozen=True, slots=True)
class DriftStageConfig:
    window_s: int = 900
    lateness_s: float = 60.0
    idle_close_s: float = 30.0  # with no new events for this long, the wall clock advances the watermark
    reservoir_size: int = 1000
    max_keys: int = 128
    history_windows: int = 96  # closed windows kept per key for the reference (96 x 15 min = 24 h)
    max_lineages: int = 10_000  # (service, model, prompt) whose last window is kept for version changes
    key_fields: tuple[str, ...] = KEY_FIELDS  # which of model, prompt_name, prompt_version split keys (service always)
    statistics: DriftConfig = field(default_factory=DriftConfig)
    signals: SignalOptions = field(default_factory=SignalOptions)
    seed: int = 0
    change_persist_s: float = 120.0  # a new value must keep its share this long before it is a change event
    change_min_share: float = 0.1  # share of a key's calls that makes a value part of its traffic

    def change_config(self) -> ChangeConfig:
        """The change detector's settings: lateness, idleness and the reference period are the drift stage's."""
        return ChangeConfig(
            persist_s=self.change_persist_s,
            min_share=self.change_min_share,
            lateness_s=self.lateness_s,
            idle_s=self.idle_close_s,
            reference_s=float(self.history_windows * self.window_s),
            bucket_s=tally_resolution_s(self.window_s),
        )


class _RawCall(NamedTuple):
    """What an open window keeps of a call until it closes: only what `_sample` reads."""

    attributes: dict[str, Any]
    finish_reason: str
    output_tokens: int
    ttft_ms: float | None
    scores: Mapping[str, Sequence[float]] = {}  # evaluator -> the call's evaluation scores (read, never changed)


@dataclass(slots=True)
class _Sampled:
    signals: CallSignals
    output_tokens: int
    ttft_ms: float | None
    scores: Mapping[str, Sequence[float]] = field(default_factory=dict)


@dataclass(slots=True)
class _Closed:
    start: int  # window start, s
    seen: int  # calls the window had
    sample: list[_Sampled]  # uniform subsample kept for the reference


@dataclass(slots=True)
class _OpenWindow:
    sample: BottomK[_RawCall]
    seen: int = 0  # calls tallied into the window (the population the sample stands for)


@dataclass(slots=True)
class _KeyState:
    # window start (s) -> sample of raw calls; signals are extracted when the window closes,
    # so only the ~reservoir_size calls that survive are ever hashed, however busy the key.
    open: dict[int, _OpenWindow] = field(default_factory=dict)
    history: deque[_Closed] = field(default_factory=deque)
    max_event_s: float = 0.0  # newest event time of the key (capped at the wall clock)
    last_event_wall: float = 0.0  # wall-clock time of the key's newest arrival


class DriftTracker:
    def __init__(self, config: DriftStageConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or DriftStageConfig()
        unknown = set(self.config.key_fields) - set(KEY_FIELDS)
        if unknown:
            raise ValueError(f"drift key fields must be among {KEY_FIELDS}, not {sorted(unknown)}")
        self._clock = clock
        self._window = Window(self.config.window_s, self.config.lateness_s, clock)
        self._tally_bucket = Window(tally_resolution_s(self.config.window_s))
        self._keys: KeyRegistry[DriftKey, _KeyState] = KeyRegistry(self.config.max_keys)
        self._rng = np.random.default_rng(self.config.seed)
        # lineage (service, model, prompt) -> version -> order of first sighting: which version replaced which
        self._versions: KeyRegistry[tuple[str, str, str], dict[str, int]] = KeyRegistry(self.config.max_lineages)
        # lineage -> (version, window end s, sample) of its last closed window
        self._last_closed: KeyRegistry[tuple[str, str, str], tuple[str, int, list[_Sampled]]] = KeyRegistry(
            self.config.max_lineages
        )
        self._pinned: dict[DriftKey, tuple[list[_Sampled], int]] = {}
        self._changes = ChangeDetector(self.config.change_config())
        self.calls_seen = 0
        self.late_calls = 0  # arrived after their window closed: counted, not sampled

    @property
    def evicted_keys(self) -> int:
        return self._keys.evicted

    @property
    def live_keys(self) -> int:
        return len(self._keys)

    def _watermark(self, state: _KeyState) -> float:
        """Per key, so one service's clock or backlog never makes another's calls late."""
        return self._window.watermark(state.max_event_s, state.last_event_wall, self.config.idle_close_s)

    # -- input ------------------------------------------------------------
    def add(self, service: str, calls: Sequence[dict[str, Any]], tallies: Sequence[Tally] | None = None) -> None:
        """Count the `tallies` (every call of a batch), then offer `calls` to their windows' samples.

        Without `tallies`, `calls` are all the calls and are tallied here. A call whose window
        is not open (its tally was late) is skipped: the tally already counted it.
        """
        window = self._window
        if tallies is None:
            tallies = tally_calls(
                (
                    (
                        c["ts_ns"],
                        c["model"],
                        c["prompt_name"],
                        c["prompt_version"],
                        str(c["attributes"].get(EMBEDDING_MODEL_ATTRIBUTE, "")),
                        c.get("trace_id", ""),
                        c.get("span_id", ""),
                    )
                    for c in calls
                ),
                self._tally_bucket,
            )
        now = self._clock()
        for tally in tallies:
            self.calls_seen += tally.call_count
            self._note_changes(service, tally, now)
            key = self._key(service, tally.model, tally.prompt_name, tally.prompt_version)
            ts_s = tally.max_ts_ns / 1e9
            start = window.start_s(tally.max_ts_ns)
            state, _evicted = self._keys.get_or_create(
                key, lambda: _KeyState(max_event_s=float("-inf"), last_event_wall=now)
            )
            if window.closed(start, self._watermark(state)):
                self.late_calls += tally.call_count
                continue
            opened = state.open.get(start)
            if opened is None:
                opened = state.open[start] = _OpenWindow(BottomK(self.config.reservoir_size))
            opened.seen += tally.call_count
            # A span from a clock running ahead must not close windows before their time.
            state.max_event_s = max(state.max_event_s, min(ts_s, now))
            state.last_event_wall = now
        for call in calls:
            found = self._keys.get(self._key(service, call["model"], call["prompt_name"], call["prompt_version"]))
            opened = found.open.get(window.start_s(int(call["ts_ns"]))) if found is not None else None
            if opened is None:
                continue
            priority = call.get("priority") or call_priority(call.get("trace_id", ""), call.get("span_id", ""))
            if opened.sample.admits(priority):
                opened.sample.offer(
                    priority,
                    _RawCall(
                        call["attributes"],
                        call.get("finish_reason") or "",
                        int(call["output_tokens"]),
                        call.get("ttft_ms"),
                        call.get("scores") or {},
                    ),
                )

    def _key(self, service: str, model: str, prompt_name: str, prompt_version: str) -> DriftKey:
        """The window key: the service, and of model, prompt and version those `key_fields` name."""
        fields = self.config.key_fields
        values = (model, prompt_name, prompt_version)
        return DriftKey(
            service, *(value if name in fields else "" for name, value in zip(KEY_FIELDS, values, strict=True))
        )

    def _sample(self, call: _RawCall) -> _Sampled:
        """Signal extraction (the answer embedding included), for calls a closing window kept."""
        attributes = call.attributes
        if call.finish_reason and "gen_ai.response.finish_reasons" not in attributes:
            attributes = {**attributes, "gen_ai.response.finish_reasons": [call.finish_reason]}
        signals = extract_signals(attributes, self.config.signals)
        if signals.answer_embedding is not None:
            signals = replace(signals, answer_embedding=signals.answer_embedding.astype(np.float16))
        return _Sampled(signals, call.output_tokens, call.ttft_ms, call.scores)

    def _note_changes(self, service: str, tally: Tally, now: float) -> None:
        """Feed the change detector (key: service and prompt name) and remember the order versions appeared in."""
        for kind, value in (
            ("prompt_version", tally.prompt_version),
            ("response_model", tally.model),
            ("embedding_model", tally.embedding_model),
        ):
            self._changes.observe(
                service,
                tally.prompt_name,
                kind,
                value,
                tally.call_count,
                tally.first_ts_ns,
                tally.max_ts_ns,
                tally.first_trace_id,
                tally.first_span_id,
                tally.model,
                now,
            )
        if tally.prompt_version:
            order, _ = self._versions.get_or_create((service, tally.model, tally.prompt_name), dict)
            order.setdefault(tally.prompt_version, len(order))

    def pin(self, key: DriftKey) -> bool:
        """Freeze the key's current reference (its merged history); False when it has none yet."""
        state = self._keys.get(key)
        if state is None or not state.history:
            return False
        self._pinned[key] = (self._merge_history(state.history), state.history[-1].start + self.config.window_s)
        return True

    # -- output -----------------------------------------------------------
    def close(self) -> tuple[TableRows, TableRows]:
        """Rows for every window the watermark passed, and change events noted since the last call."""
        window = self.config.window_s
        closing: list[tuple[DriftKey, int, _OpenWindow]] = []
        for key in self._keys.keys():  # noqa: SIM118 - a KeyRegistry, not a dict: keys() is how it iterates
            state = self._keys.get(key)
            assert state is not None
            mark = self._watermark(state)
            for start in sorted(s for s in state.open if self._window.closed(s, mark)):
                closing.append((key, start, state.open.pop(start)))
        results: dict[tuple[DriftKey, int], tuple[list[DriftResult], tuple[str, int]]] = {}
        for key, start, current in sorted(closing, key=lambda item: item[1]):
            state = self._keys.get(key)
            assert state is not None
            reference, description, reference_end = self._reference(key, state, start)
            items = [self._sample(call) for call in current.sample.items]
            if reference and items:  # reference_end <= start: `_reference` only chooses the past
                assert reference_end is not None, "a reference sample has an end"
                sample_ref, sample_cur = _window_sample(reference), _window_sample(items)
                results[(key, start)] = (
                    evaluate_window(sample_ref, sample_cur, self.config.statistics),
                    (description, reference_end),
                )
            self._remember(state, _Closed(start, current.seen, items))
            self._last_closed.pop(key.lineage)
            last: tuple[str, int, list[_Sampled]] = (key.prompt_version, start + window, items)
            self._last_closed.get_or_create(key.lineage, lambda: last)  # noqa: B023 - called before the loop moves on
        rows = TableRows("llm_drift", list(DRIFT_COLUMNS))
        for start in sorted({s for _, s in results}):
            same_window = {k: r for (k, s), (r, _) in results.items() if s == start}
            controlled = control_across_keys(same_window, self.config.statistics.cross_key_fdr)
            for key, decided in controlled.items():
                description, reference_end = results[(key, start)][1]
                for result in decided:
                    for column, item in zip(
                        rows.columns,
                        (
                            start * 1000,
                            (start + window) * 1000,
                            key.service,
                            key.model,
                            key.prompt_name,
                            key.prompt_version,
                            result.signal,
                            result.statistic,
                            float(result.value),
                            result.p_value,
                            float(result.threshold),
                            bool(result.drifted),
                            result.n_ref,
                            result.n_cur,
                            description,
                            reference_end * 1000,
                        ),
                        strict=True,
                    ):
                        column.append(item)
        changes = TableRows("change_events", list(CHANGE_COLUMNS))
        for event in self._changes.decide(self._clock()):
            for column, cell in zip(changes.columns, event, strict=True):
                column.append(cell)
        return rows, changes

    def _remember(self, state: _KeyState, closed: _Closed) -> None:
        """Append a closed window; trim every kept window so the history holds at most 2 x reservoir_size calls."""
        state.history.append(closed)
        while len(state.history) > self.config.history_windows:
            state.history.popleft()
        per_window = max(1, 2 * self.config.reservoir_size // len(state.history))
        for window in state.history:
            if len(window.sample) > per_window:
                keep = self._rng.choice(len(window.sample), size=per_window, replace=False)
                window.sample = [window.sample[int(i)] for i in keep]

    def _merge_history(self, history: Sequence[_Closed]) -> list[_Sampled]:
        """One sample of the history, each window contributing in proportion to its calls."""
        seen = np.array([w.seen for w in history], dtype=np.int64)
        size = int(min(self.config.reservoir_size, seen.sum()))
        counts = self._rng.multivariate_hypergeometric(seen, size) if len(history) > 1 else np.array([size])
        merged: list[_Sampled] = []
        for window, count in zip(history, counts.tolist(), strict=True):
            take = min(count, len(window.sample))  # a window far busier than the others may give fewer
            chosen = self._rng.choice(len(window.sample), size=take, replace=False) if take else []
            merged.extend(window.sample[int(i)] for i in chosen)
        return merged

    def _reference(self, key: DriftKey, state: _KeyState, start: int) -> tuple[list[_Sampled] | None, str, int | None]:
        """(sample, description naming its windows, end of its newest window in s) for the window opening at `start`."""
        if key in self._pinned:
            sample, end = self._pinned[key]
            return sample, f"pinned reference (windows up to {_iso(end)})", end
        window = self.config.window_s
        history = [w for w in state.history if w.start + window <= start]  # closed before this window opened
        enough = sum(w.seen for w in history) >= self.config.statistics.min_samples
        if history and (enough or not self._previous_version(key, start)[0]):
            first, last = history[0].start, history[-1].start + window
            return (
                self._merge_history(history),
                f"own history: {len(history)} window(s) {_iso(first)}..{_iso(last)}",
                last,
            )
        return self._previous_version(key, start)

    def _previous_version(self, key: DriftKey, start: int) -> tuple[list[_Sampled] | None, str, int | None]:
        """The last window, ended before this one opened, of a version of the same prompt and model that was
        first seen before this one: what the new version replaced. Only the past: never a window that ends
        after `start`."""
        window = self.config.window_s
        order = self._versions.get(key.lineage) or {}
        mine = order.get(key.prompt_version, -1)
        best: tuple[int, str, Sequence[_Sampled | _RawCall]] | None = None
        for other in self._keys.keys():  # noqa: SIM118 - a KeyRegistry, not a dict
            if other.lineage != key.lineage or other == key or order.get(other.prompt_version, mine) >= mine:
                continue  # only versions first seen before this one are what it replaced
            state = self._keys.get(other)
            assert state is not None
            # Closed windows, and open ones whose event time ended before this window opened (a sibling
            # key's watermark may trail this one's): their calls are the past all the same.
            windows: list[tuple[int, Sequence[_Sampled | _RawCall]]] = [(w.start, w.sample) for w in state.history]
            windows += [(s, w.sample.items) for s, w in state.open.items()]
            for window_start, items in windows:
                end = window_start + window
                if items and end <= start and (best is None or end > best[0]):
                    best = (end, other.prompt_version, items)
        if best is None:
            previous = self._last_closed.get(key.lineage)  # the sibling key itself may have been evicted
            if previous is not None and order.get(previous[0], mine) < mine and previous[1] <= start and previous[2]:
                return (
                    previous[2],
                    f"previous version {previous[0]}: window {_iso(previous[1] - window)}..{_iso(previous[1])}",
                    previous[1],
                )
            return None, "", None
        end, version, items = best
        sample = [self._sample(item) if isinstance(item, _RawCall) else item for item in items]
        return sample, f"previous version {version}: window {_iso(end - window)}..{_iso(end)}", end


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _window_sample(items: Sequence[_Sampled]) -> WindowSample:
    """Arrays per signal; calls without a value contribute NaN (scalars) or nothing (vectors)."""
    answers = [s.signals.answer_embedding for s in items if s.signals.answer_embedding is not None]
    vectors = [s.signals.span_embedding for s in items if s.signals.span_embedding is not None]

    def scalar(get: Callable[[_Sampled], Any]) -> np.ndarray:
        return np.array([np.nan if (v := get(s)) is None else float(v) for s in items], dtype=np.float64)

    categoricals = {
        "finish_reason": np.array([s.signals.finish_reason or "none" for s in items]),
        "refusal": np.array([str(s.signals.refusal).lower() for s in items if s.signals.refusal is not None]),
        "retrieval_empty": np.array(
            [str(s.signals.retrieval_empty).lower() for s in items if s.signals.retrieval_empty is not None]
        ),
    }
    scores: dict[str, list[float]] = {}
    for s in items:
        for evaluator, values in s.scores.items():
            scores.setdefault(f"score:{evaluator}", []).extend(values)
    return WindowSample(
        answer_embeddings=np.vstack(answers) if answers else None,
        query_embeddings=np.vstack(vectors) if len({v.shape for v in vectors}) == 1 and vectors else None,
        scalars={
            "answer_length": scalar(lambda s: s.signals.answer_length),
            "output_tokens": scalar(lambda s: s.output_tokens),
            "retrieval_score": scalar(lambda s: s.signals.retrieval_score_mean),
            "ttft_ms": scalar(lambda s: s.ttft_ms),
            **{name: np.asarray(values, dtype=np.float64) for name, values in scores.items()},
        },
        categoricals={name: values for name, values in categoricals.items() if values.size},
    )
