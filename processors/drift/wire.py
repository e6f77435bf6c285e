"""The record a worker sends to the keyed drift topic: one per service and batch, JSON.

Only what drift needs travels: the call's key and scalars, and the span
attributes the signal extractor reads (answer text, vectors, retrieval
scores). Keyed by service, so one drift worker owns a service: it sees every
prompt version and model of that service, which change detection needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from processors.records import LLMCall, SpanView

__all__ = ["DRIFT_ATTRIBUTE_PREFIXES", "drift_payloads", "decode_payload", "pin_payload"]

DRIFT_ATTRIBUTE_PREFIXES = (
    "gen_ai.output.messages",
    "gen_ai.completion.",
    "output.value",
    "embedding.",
    "retrieval.documents.",
    "gen_ai.response.finish_reasons",
)
_MAX_TEXT = 8192  # answer text beyond this adds nothing to the statistics but bytes to Kafka


def _drift_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in attributes.items():
        if key.startswith(DRIFT_ATTRIBUTE_PREFIXES):
            if isinstance(value, str) and len(value) > _MAX_TEXT:
                value = value[:_MAX_TEXT]
            elif isinstance(value, bytes):
                continue
            out[key] = value
    return out


def drift_payloads(calls: Sequence[LLMCall], spans: Sequence[SpanView], max_bytes: int = 500_000) -> list[tuple[str, bytes]]:
    """(service, JSON record) pairs holding the calls (`calls[i]` came from `spans[i]`), each record
    under `max_bytes` so it fits a Kafka message whatever the answers weigh."""
    by_service: dict[str, list[bytes]] = {}
    for call, span in zip(calls, spans):
        if call.status != "ok" or call.operation in ("embeddings", "embedding"):
            continue
        item = {
            "ts_ns": call.ts_ns,
            "span_id": call.span_id,
            "trace_id": call.trace_id,
            "model": call.model,
            "prompt_name": call.prompt_name,
            "prompt_version": call.prompt_version,
            "output_tokens": call.output_tokens,
            "ttft_ms": call.ttft_ms,
            "finish_reason": call.finish_reason,
            "attributes": _drift_attributes(span.attributes),
        }
        by_service.setdefault(call.service, []).append(orjson.dumps(item))
    records: list[tuple[str, bytes]] = []
    for service, items in by_service.items():
        head = orjson.dumps({"service": service})[:-1] + b',"calls":['
        chunk: list[bytes] = []
        size = len(head)
        for item in items:
            if chunk and size + len(item) + 2 > max_bytes:
                records.append((service, head + b",".join(chunk) + b"]}"))
                chunk, size = [], len(head)
            chunk.append(item)
            size += len(item) + 1
        if chunk:
            records.append((service, head + b",".join(chunk) + b"]}"))
    return records


def pin_payload(service: str, model: str, prompt_name: str, prompt_version: str) -> bytes:
    """A control record: freeze the key's current reference. Keyed by service like the calls,
    so it reaches the worker that owns the key's windows."""
    pin = {"model": model, "prompt_name": prompt_name, "prompt_version": prompt_version}
    return orjson.dumps({"service": service, "calls": [], "pin": pin})


def decode_payload(value: bytes) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
    document = orjson.loads(value)
    return str(document["service"]), list(document["calls"]), document.get("pin")
