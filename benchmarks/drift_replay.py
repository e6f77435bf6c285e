"""The drift path as the drift worker sees an hour of traffic, for any tree's classes (no project imports).

`oncall_numbers.py` runs it with this tree's sender, wire decoder and tracker, and with an older
commit's in a child process whose PYTHONPATH is that commit's tree, so both see the same calls.
"""

from __future__ import annotations

from typing import Any


def drift_events(decoded: list[Any], start_ns: int, sender: Any, decode_payload: Any, make_tracker: Any) -> list[tuple]:
    """Change events from drift records in 2-s batches of event time, the wall clock 2 s behind the newest call."""
    clock = [start_ns / 1e9]
    tracker = make_tracker(lambda: clock[0])
    pairs = sorted(
        ((c, s) for r in decoded for c, s in zip(r.calls, r.call_spans, strict=True)), key=lambda p: p[0].ts_ns
    )
    events: list[tuple] = []
    batch_ns = 2 * 10**9
    i = 0
    while i < len(pairs):
        end = pairs[i][0].ts_ns // batch_ns * batch_ns + batch_ns
        j = i
        while j < len(pairs) and pairs[j][0].ts_ns < end:
            j += 1
        calls, spans = zip(*pairs[i:j], strict=True)
        for _, value in sender.payloads(list(calls), list(spans)):
            record = decode_payload(value)
            tracker.add(record.service, record.calls, record.tallies)
        clock[0] = end / 1e9 + 2
        _, changes = tracker.close()
        events += list(zip(*changes.columns, strict=True))
        i = j
    clock[0] += 3600
    events += list(zip(*tracker.close()[1].columns, strict=True))
    return events


# Run in a child whose PYTHONPATH is a commit's tree from before the core layer (processors/drift/...):
# argv[1] is a pickle of (request bodies, start_ns); prints the change events as repr lines.
OLD_TREE_CHILD = """
import pickle, sys
from llmops.config import Settings
from processors.drift.stream import DriftStageConfig, DriftTracker
from processors.drift.wire import DriftSender, decode_payload
from processors.pipeline import SourceRecord, decode_parsed, parse_records
from processors.stages import build_call_stages
from drift_replay import drift_events

bodies, start_ns = pickle.load(open(sys.argv[1], "rb"))
parsed, poison = parse_records([SourceRecord("otlp_spans", 0, i, b, "bench/0") for i, b in enumerate(bodies)])
decoded = decode_parsed(parsed, build_call_stages(Settings()))
config = DriftStageConfig(window_s=900, lateness_s=60, idle_close_s=30)
sender = DriftSender(900, sample_size=1000, max_windows=8)
for event in drift_events(decoded, start_ns, sender, decode_payload, lambda clock: DriftTracker(config, clock=clock)):
    print(repr(event[:7]))
"""
