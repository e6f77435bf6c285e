"""The record a worker sends to the keyed drift topic: one per service and batch, JSON.

Keyed by service, so one drift worker owns a service: it sees every prompt version
and model of that service, which change detection needs. A record holds:

- ``tallies``: every call of the batch, counted per drift key, embedding model and
  window, with the newest event time and the first call (for change events and the
  watermark). A tally is a few dozen bytes however many calls it stands for.
- ``calls``: only the calls that can still be in their window's bottom-k sample
  (`processors.core.drift.sampling`), with their priority, and of each only what drift
  reads: the key, a few scalars, the span attributes the signal extractor reads
  (answer text, vectors, retrieval scores) and the evaluation scores its span carries about
  the call itself (``scores``: evaluator -> scores, at most `MAX_CALL_SCORES` in all; results
  on other spans, such as a post-hoc evaluator span or an event on the parent, are not joined).

`DriftSender` is the decoding worker's side; `decode_payload` the drift worker's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from processors.core.bounds import MAX_VECTOR_LEN, BadValue, label
from processors.core.drift.sampling import PrioritySieve, call_priority
from processors.core.evaluations import evaluations_of
from processors.core.records import LLMCall, SpanView
from processors.core.window import Window

__all__ = [
    "DRIFT_ATTRIBUTE_PREFIXES",
    "MAX_CALL_SCORES",
    "DriftSender",
    "Tally",
    "call_scores",
    "decode_payload",
    "pin_payload",
    "tally_calls",
    "tally_resolution_s",
]

# What `processors.core.drift.signals` reads, in every convention it knows (OTel GenAI, OpenInference, OpenLLMetry).
DRIFT_ATTRIBUTE_PREFIXES = (
    "gen_ai.output.messages",
    "llm.output_messages.",
    "llm.finish_reason",
    "openinference.span.kind",
    "gen_ai.completion.",
    "output.value",
    "embedding.",
    "retrieval.documents.",
    "gen_ai.response.finish_reasons",
)
EMBEDDING_MODEL_ATTRIBUTE = "embedding.model_name"
_MAX_TEXT = 8192  # answer text beyond this adds nothing to the statistics but bytes to Kafka
MAX_CALL_SCORES = 32  # evaluation scores a sampled call carries to the drift stage (its span's first ones)


class Tally(NamedTuple):
    """Calls of one service, key and embedding model in one `tally_resolution_s` bucket of event time, in a batch."""

    model: str
    prompt_name: str
    prompt_version: str
    embedding_model: str
    call_count: int
    max_ts_ns: int
    first_ts_ns: int  # the earliest call of the batch with these values: a change event is stamped with it
    first_trace_id: str
    first_span_id: str


def tally_resolution_s(window_s: int) -> int:
    """Seconds of event time one tally covers: 10 s, or the largest divisor of the drift window below it, so
    a tally never straddles two drift windows. Change events compare shares of a key's calls at this
    resolution (`processors.core.drift.changes`)."""
    return math.gcd(window_s, 10)


# What a tally reads of a call: (ts_ns, model, prompt_name, prompt_version, embedding_model, trace_id, span_id).
TallyInput = tuple[int, str, str, str, str, str, str]


def tally_calls(calls: Iterable[TallyInput], bucket: Window) -> list[Tally]:
    """Tallies per `bucket` window (`tally_resolution_s` long), in the order their first call appears; each
    names its earliest call (calls of a batch are not in event-time order)."""
    open_: dict[tuple[str, str, str, str, int], list[Any]] = {}  # slot -> [count, max_ts_ns, earliest ts, trace, span]
    index = bucket.index
    for ts_ns, model, prompt_name, prompt_version, embedding_model, trace_id, span_id in calls:
        slot = (model, prompt_name, prompt_version, embedding_model, index(ts_ns))
        entry = open_.get(slot)
        if entry is None:
            open_[slot] = [1, ts_ns, ts_ns, trace_id, span_id]
        else:
            entry[0] += 1
            if ts_ns > entry[1]:
                entry[1] = ts_ns
            if ts_ns < entry[2]:
                entry[2:] = [ts_ns, trace_id, span_id]
    return [Tally(*slot[:4], *entry) for slot, entry in open_.items()]


def _drift_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attributes.items():
        if key.startswith(DRIFT_ATTRIBUTE_PREFIXES):
            if isinstance(value, str) and len(value) > _MAX_TEXT:
                value = value[:_MAX_TEXT]
            elif isinstance(value, bytes) or (isinstance(value, (list, dict)) and len(value) > MAX_VECTOR_LEN):
                continue  # no signal reads bytes; a longer array is no embedding the signals accept
            out[key] = value
    return out


def call_scores(call: LLMCall, span: SpanView) -> dict[str, list[float]]:
    """Evaluator -> scores of the results `span` carries about the call itself (processors/core/evaluations.py),
    at most MAX_CALL_SCORES in all; results without a score or an evaluator name are left out."""
    scores: dict[str, list[float]] = {}
    kept = 0
    for result in evaluations_of(span, call, []):  # bad values are the worker's ingest_errors rows already
        if result.score_value is None or not result.evaluator or result.span_id != call.span_id:
            continue
        scores.setdefault(result.evaluator, []).append(result.score_value)
        kept += 1
        if kept == MAX_CALL_SCORES:
            break
    return scores


def _no_bytes(value: Any) -> None:
    """orjson's fallback for values JSON has no type for: bytes inside an array or kvlist become null
    (no signal reads them; top-level bytes are already left out)."""
    if isinstance(value, (bytes, bytearray)):
        return
    raise TypeError(f"{type(value).__name__} in a drift record")


def _embedding_model(value: Any) -> str:
    """The embedding model name a tally is keyed by; "" when absent or not a name (processors/core/bounds.py)."""
    if value is None:
        return ""
    try:
        return label(value, EMBEDDING_MODEL_ATTRIBUTE)
    except BadValue:
        return ""


class DriftSender:
    """Builds a batch's drift records; remembers per key and window what it already sent.

    The sieve is keyed by the full (service, model, prompt, version) whatever
    `drift.key_fields` says: the bottom-k of a coarser key is contained in the union of
    its finer keys' bottom-k, so the filter stays exact for any key choice.
    """

    def __init__(self, window_s: int, sample_size: int, max_windows: int) -> None:
        self._window = Window(window_s)
        self._tally_bucket = Window(tally_resolution_s(window_s))
        self._sieve: PrioritySieve[tuple[str, str, str, str, int]] = PrioritySieve(sample_size, max_windows)
        self._tally_inputs: dict[str, list[TallyInput]] = {}
        self._items: dict[str, list[bytes]] = {}
        self.calls_tallied = 0
        self.calls_sent = 0

    def add(self, calls: Sequence[LLMCall], spans: Sequence[SpanView]) -> None:
        """Tally the calls (`calls[i]` came from `spans[i]`) and encode those the sieve passes.
        Nothing keeps a reference to the spans, so a caller can drop them record by record."""
        window_index = self._window.index
        for call, span in zip(calls, spans, strict=True):
            if call.status != "ok" or call.operation in ("embeddings", "embedding"):
                continue
            service, model = call.service, call.model
            embedding_model = _embedding_model(span.attributes.get(EMBEDDING_MODEL_ATTRIBUTE))
            self._tally_inputs.setdefault(service, []).append(
                (call.ts_ns, model, call.prompt_name, call.prompt_version, embedding_model, call.trace_id, call.span_id)
            )
            priority = call_priority(call.trace_id, call.span_id)
            slot = (service, model, call.prompt_name, call.prompt_version, window_index(call.ts_ns))
            if not self._sieve.passes(slot, priority):
                continue
            item = {
                "priority": priority,
                "ts_ns": call.ts_ns,
                "span_id": call.span_id,
                "trace_id": call.trace_id,
                "model": model,
                "prompt_name": call.prompt_name,
                "prompt_version": call.prompt_version,
                "output_tokens": call.output_tokens,
                "ttft_ms": call.ttft_ms,
                "finish_reason": call.finish_reason,
                "attributes": _drift_attributes(span.attributes),
            }
            scores = call_scores(call, span)
            if scores:
                item["scores"] = scores
            self._items.setdefault(service, []).append(orjson.dumps(item, default=_no_bytes))

    def take(self, max_bytes: int = 500_000) -> list[tuple[str, bytes]]:
        """(service, JSON record) pairs for what `add` got since the last `take`, each record under
        `max_bytes` so it fits a Kafka message whatever the answers weigh."""
        records: list[tuple[str, bytes]] = []
        for service, inputs in self._tally_inputs.items():
            items = self._items.get(service, [])
            self.calls_tallied += len(inputs)
            self.calls_sent += len(items)
            tallies = orjson.dumps([list(t) for t in tally_calls(inputs, self._tally_bucket)])
            records += _chunks(service, tallies, items, max_bytes)
        self._tally_inputs, self._items = {}, {}
        return records

    def payloads(
        self, calls: Sequence[LLMCall], spans: Sequence[SpanView], max_bytes: int = 500_000
    ) -> list[tuple[str, bytes]]:
        """`add` then `take`: the records for one batch of calls."""
        self.add(calls, spans)
        return self.take(max_bytes)


def _chunks(service: str, tallies: bytes, items: list[bytes], max_bytes: int) -> list[tuple[str, bytes]]:
    """The tallies ride in the first record; calls fill records up to `max_bytes`."""
    head = orjson.dumps({"service": service})[:-1]
    records: list[tuple[str, bytes]] = []
    chunk: list[bytes] = []
    prefix = head + b',"tallies":' + tallies + b',"calls":['
    size = len(prefix)
    for item in items:
        if chunk and size + len(item) + 2 > max_bytes:
            records.append((service, prefix + b",".join(chunk) + b"]}"))
            prefix = head + b',"tallies":[],"calls":['
            chunk, size = [], len(prefix)
        chunk.append(item)
        size += len(item) + 1
    records.append((service, prefix + b",".join(chunk) + b"]}"))
    return records


def pin_payload(service: str, model: str, prompt_name: str, prompt_version: str) -> bytes:
    """A control record: freeze the key's current reference. Keyed by service like the calls,
    so it reaches the worker that owns the key's windows."""
    pin = {"model": model, "prompt_name": prompt_name, "prompt_version": prompt_version}
    return orjson.dumps({"service": service, "tallies": [], "calls": [], "pin": pin})


class DriftRecord(NamedTuple):
    service: str
    calls: list[dict[str, Any]]
    tallies: list[Tally]
    pin: dict[str, Any] | None


def decode_payload(value: bytes) -> DriftRecord:
    document = orjson.loads(value)
    tallies = [Tally(*t) for t in document["tallies"]]
    return DriftRecord(str(document["service"]), list(document["calls"]), tallies, document.get("pin"))
