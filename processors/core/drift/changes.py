"""Change events: a value that is new to a key and then persists, or one that carried the key's traffic and stops.

Why not "first sighting": a key's traffic is usually a mix (two models called in turn, an A/B
test of prompt versions, a fallback model). Reporting every value the first time it shows up
drew a changed line on every panel every few minutes. Here a key is the service and the prompt
name (empty when there is none); for each kind (prompt version, response model, embedding model)
the detector keeps the values seen in the key's reference period (`reference_s`, 24 h by default)
and reports:

- **new value**: a value not in the reference that, over the `persist_s` of event time after its
  first call, carries at least `min_share` of the key's calls and still has calls in the second
  half of that time. The event is stamped with that first call (event time, trace and span), and
  names as old value the one it replaced, if one went silent at the same time (a switch), else ''
  (added to the mix).
- **stopped value**: a value that carried at least `min_share` of the key's calls and then had
  none while the key went on: for `persist_s` of event time and for so many of the key's calls
  that, at half its former share, seeing none of them has a probability below
  `stop_probability`. New value '' and stamped with its last call, unless a new value replaced it
  (then the switch above is the one event). A value that comes back after it stopped alternates
  with others: its later stops are a mix, not changes.

A key's first `persist_s` of event time (and at least `baseline_calls` calls) is its reference:
no new-value events then, but a value that carried the key and stops in favour of one that
appeared after the key's first calls is still one switch event, so a switch during a worker's
first minutes is not lost.

Counts go into `bucket_s` buckets of event time (tallies come at that resolution, see
`processors.core.drift.wire`); decisions wait for the key's watermark (newest event time minus
`lateness_s`) or, after `idle_s` of wall-clock time without calls, are taken on what arrived.
Pure state, no I/O; memory is bounded by the number of keys (`max_keys`, least recently used
evicted) and per key by the values of its reference and a few `persist_s` of buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from processors.core.drift.sampling import KeyRegistry
from processors.core.window import Window

__all__ = ["ChangeConfig", "ChangeDetector", "ChangeEvent"]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ChangeConfig:
    persist_s: float = 120.0  # a new value must keep its share this long (event time) before it is reported
    min_share: float = 0.1  # share of the key's calls that makes a value part of the key's traffic
    baseline_calls: int = 50  # calls a key needs, beside persist_s, before new values count as changes
    min_calls: int = 5  # calls a new value needs to be reported
    reference_s: float = 86_400.0  # a value unseen this long is new again
    stop_probability: float = 1e-6  # chance of a live value's silence a stop may be mistaken for
    bucket_s: int = 10
    lateness_s: float = 60.0
    idle_s: float = 30.0
    max_keys: int = 10_000


class ChangeEvent(NamedTuple):
    ts_ns: int
    service: str
    kind: str
    old_value: str
    new_value: str
    model: str
    prompt_name: str
    trace_id: str
    span_id: str


@dataclass(slots=True)
class _Value:
    first_ns: int
    last_ns: int
    trace_id: str
    span_id: str
    model: str
    stopped: bool = False  # went silent (reported, or explained by a switch)
    returned: bool = False  # came back after a stop: alternates, its stops are a mix
    reported: bool = False  # reported as a new value: its predecessor's stop is not a switch to it
    share: float | None = None  # its share of the key's calls before its last call, once judged (buckets age out)


@dataclass(slots=True)
class _Slot:
    start_ns: int
    max_ns: int = 0
    last_wall: float = 0.0
    calls: int = 0
    values: dict[str, _Value] = field(default_factory=dict)  # the reference
    candidates: dict[str, _Value] = field(default_factory=dict)  # new values under watch
    buckets: dict[int, Counter[str]] = field(default_factory=dict)  # bucket -> calls per value

    def counts(self, first_bucket: int, last_bucket: int) -> tuple[Counter[str], int]:
        """Calls per value and in total over buckets [first_bucket, last_bucket]."""
        out: Counter[str] = Counter()
        for bucket, counts in self.buckets.items():
            if first_bucket <= bucket <= last_bucket:
                out.update(counts)
        return out, sum(out.values())


class ChangeDetector:
    def __init__(self, config: ChangeConfig | None = None) -> None:
        self.config = config or ChangeConfig()
        self._buckets = Window(self.config.bucket_s)  # the tallies' resolution: counts are kept per bucket
        self._slots: KeyRegistry[tuple[str, str, str], _Slot] = KeyRegistry(self.config.max_keys)

    @property
    def evicted_keys(self) -> int:
        return self._slots.evicted

    def observe(
        self,
        service: str,
        prompt_name: str,
        kind: str,
        value: str,
        count: int,
        first_ns: int,
        max_ns: int,
        trace_id: str,
        span_id: str,
        model: str,
        now: float,
    ) -> None:
        """`count` calls of one bucket with `value`, the earliest at `first_ns` (with its ids)."""
        if not value or count <= 0:
            return
        cap_ns = int(now * _NS)
        slot, _ = self._slots.get_or_create(
            (service, prompt_name, kind), lambda: _Slot(start_ns=first_ns, last_wall=now)
        )
        slot.start_ns = min(slot.start_ns, first_ns)
        slot.max_ns = max(slot.max_ns, min(max_ns, cap_ns))  # a clock running ahead must not decide early
        slot.last_wall = now
        slot.calls += count
        bucket = self._buckets.index(max_ns)
        slot.buckets.setdefault(bucket, Counter())[value] += count
        known = slot.values.get(value)
        if known is not None:
            if known.stopped:
                known.stopped, known.returned = False, True
            if max_ns > known.last_ns:
                known.last_ns, known.share = max_ns, None
            return
        seen = slot.candidates.get(value)
        if seen is None:
            seen = _Value(first_ns, max_ns, trace_id, span_id, model)
            in_reference = (
                first_ns - slot.start_ns < self.config.persist_s * _NS
            ) or slot.calls - count < self.config.baseline_calls
            (slot.values if in_reference else slot.candidates)[value] = seen
            return
        if first_ns < seen.first_ns:
            seen.first_ns, seen.trace_id, seen.span_id, seen.model = first_ns, trace_id, span_id, model
        seen.last_ns = max(seen.last_ns, max_ns)

    def decide(self, now: float) -> list[ChangeEvent]:
        """Events for every candidate and silence the watermark (or idleness) lets us judge now."""
        events: list[ChangeEvent] = []
        persist_ns = int(self.config.persist_s * _NS)
        for key in list(self._slots.keys()):
            slot = self._slots.get(key)
            assert slot is not None
            idle = now - slot.last_wall >= self.config.idle_s
            mark = math.inf if idle else slot.max_ns - self.config.lateness_s * _NS
            service, prompt_name, kind = key
            for value, seen in sorted(slot.candidates.items(), key=lambda item: item[1].first_ns):
                if mark < seen.first_ns + persist_ns:
                    continue
                del slot.candidates[value]
                if self._persists(slot, value, seen):
                    old = self._replaced(slot, seen)
                    seen.reported = True
                    slot.values[value] = seen
                    events.append(
                        ChangeEvent(
                            seen.first_ns,
                            service,
                            kind,
                            old,
                            value,
                            seen.model,
                            prompt_name,
                            seen.trace_id,
                            seen.span_id,
                        )
                    )
            for value, known in sorted(slot.values.items(), key=lambda item: item[1].last_ns):
                if (
                    known.stopped
                    or known.returned
                    or mark < known.last_ns + persist_ns
                    or not self._silent(slot, value, known)
                ):
                    continue
                if any(abs(c.first_ns - known.last_ns) <= persist_ns for c in slot.candidates.values()):
                    continue  # a new value under watch may have replaced it: one switch event, decided with it
                known.stopped = True
                successor = self._successor(slot, value, known)
                if successor is None:
                    events.append(
                        ChangeEvent(known.last_ns, service, kind, value, "", known.model, prompt_name, "", "")
                    )
                else:
                    new_value, new = successor
                    events.append(
                        ChangeEvent(
                            new.first_ns,
                            service,
                            kind,
                            value,
                            new_value,
                            new.model,
                            prompt_name,
                            new.trace_id,
                            new.span_id,
                        )
                    )
            self._forget(slot)
        return sorted(events)

    # -- judgements -------------------------------------------------------
    def _bucket(self, ts_ns: int) -> int:
        return self._buckets.index(ts_ns)

    def _persists(self, slot: _Slot, value: str, seen: _Value) -> bool:
        """Enough of the key's calls over persist_s after its first call, and still there in its second half."""
        end_ns = min(seen.first_ns + int(self.config.persist_s * _NS), slot.max_ns)
        counts, total = slot.counts(self._bucket(seen.first_ns), self._bucket(end_ns))
        mine = counts[value]
        late, _ = slot.counts(self._bucket(seen.first_ns + (end_ns - seen.first_ns) // 2), self._bucket(end_ns))
        return mine >= self.config.min_calls and total > 0 and mine / total >= self.config.min_share and late[value] > 0

    def _share_before(self, slot: _Slot, value: str, until_ns: int) -> float:
        counts, total = slot.counts(self._bucket(until_ns - int(self.config.persist_s * _NS)), self._bucket(until_ns))
        return counts[value] / total if total else 0.0

    def _silent(self, slot: _Slot, value: str, known: _Value) -> bool:
        """The value carried the key and the key's later calls make its absence no accident."""
        if known.share is None:
            known.share = self._share_before(slot, value, known.last_ns)
        share = known.share
        if share < self.config.min_share:
            return False
        _, after = slot.counts(self._bucket(known.last_ns) + 1, self._bucket(slot.max_ns))
        needed = math.log(self.config.stop_probability) / math.log1p(-share / 2)
        return after >= needed

    def _replaced(self, slot: _Slot, new: _Value) -> str:
        """The value a new one took over from: it carried the key before and is silent since (one bucket of overlap)."""
        start = self._bucket(new.first_ns)
        end = self._bucket(min(new.first_ns + int(self.config.persist_s * _NS), slot.max_ns))
        after, _ = slot.counts(start + 1, end)
        best, best_share = "", 0.0
        for value, known in slot.values.items():
            if known.stopped or after[value] > 0:
                continue
            share = self._share_before(slot, value, new.first_ns)
            if share >= self.config.min_share and share > best_share:
                best, best_share = value, share
        if best:
            slot.values[best].stopped = True
        return best

    def _successor(self, slot: _Slot, value: str, known: _Value) -> tuple[str, _Value] | None:
        """A value that appeared after the key's first calls, around the stopped one's last call: the switch."""
        window = int(self.config.persist_s * _NS)
        best: tuple[str, _Value] | None = None
        for other, seen in slot.values.items():
            if (
                other == value
                or seen.reported
                or seen.first_ns <= known.first_ns
                or seen.first_ns - slot.start_ns < self._first_bucket_ns()
            ):
                continue
            if abs(seen.first_ns - known.last_ns) <= window and (best is None or seen.first_ns < best[1].first_ns):
                best = (other, seen)
        return best

    def _first_bucket_ns(self) -> int:
        return self._buckets.size_ns

    def _forget(self, slot: _Slot) -> None:
        """Drop buckets older than the judgements need and values older than the reference period."""
        keep_ns = int((3 * self.config.persist_s + self.config.lateness_s) * _NS)
        oldest = self._bucket(slot.max_ns - keep_ns)
        for bucket in [b for b in slot.buckets if b < oldest]:
            del slot.buckets[bucket]
        horizon = slot.max_ns - int(self.config.reference_s * _NS)
        for value in [v for v, known in slot.values.items() if known.last_ns < horizon]:
            del slot.values[value]
