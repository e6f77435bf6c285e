"""Typed records passed between stages: a decoded span and a normalised LLM call.

Stages are pure functions over these; only the agent wiring touches Kafka and
only the sink touches ClickHouse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = ["SpanEvent", "SpanLink", "SpanView", "LLMCall"]

AttrValue = Any  # str | bool | int | float | bytes | list[AttrValue] | dict[str, AttrValue]


@dataclass(slots=True)
class SpanEvent:
    time_ns: int
    name: str
    attributes: dict[str, AttrValue]


@dataclass(slots=True)
class SpanLink:
    trace_id: str
    span_id: str
    trace_state: str
    attributes: dict[str, AttrValue]


@dataclass(slots=True)
class SpanView:
    """One span with its attributes as Python values (OTLP AnyValue decoded)."""

    trace_id: str  # lower-case hex, "" when absent
    span_id: str
    parent_span_id: str
    name: str
    kind: int  # OTLP SpanKind enum value
    start_ns: int
    end_ns: int
    status_code: int  # OTLP Status.StatusCode: 0 unset, 1 ok, 2 error
    status_message: str
    attributes: dict[str, AttrValue]
    resource: dict[str, AttrValue]
    events: list[SpanEvent] = field(default_factory=list)
    scope_name: str = ""
    scope_version: str = ""
    trace_state: str = ""
    links: list[SpanLink] = field(default_factory=list)


@dataclass(slots=True)
class LLMCall:
    """One LLM call, whichever semantic convention produced it. Mirrors `llm_calls`."""

    ts_ns: int  # span start, Unix ns (UTC)
    trace_id: str
    span_id: str
    service: str = ""
    environment: str = ""
    team: str = ""
    provider: str = ""
    request_model: str = ""
    response_model: str = ""
    operation: str = ""
    prompt_name: str = ""
    prompt_version: str = ""
    agent: str = ""
    conversation_id: str = ""
    user_id: str = ""  # the end user the call was made for (user.id, enduser.id, ...); "" when the span does not say
    input_tokens: int = 0  # includes cache reads and cache writes (OTel GenAI semantics)
    output_tokens: int = 0  # includes reasoning tokens
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal | None = None  # USD, exact; None = unpriced
    reported_cost: Decimal | None = None  # provider-reported cost carried by the span, if any
    pricing_entry: str = ""  # id of the catalog entry that priced this call
    duration_ms: float = 0.0
    ttft_ms: float | None = None  # None when not streamed
    status: str = "ok"  # "ok" | "error"
    error_type: str = ""
    finish_reason: str = ""
    convention: str = ""  # "otel_genai" | "openllmetry" | "openinference"
    pricing_source: str = ""  # "user" | "project" | "base"; "" when unpriced
    pricing_version: str = ""  # base price snapshot in force
    pricing_region: str = ""  # deployment key (processors.core.deployment); "" when the span does not say
    service_tier: str = ""  # OpenAI service tier (flex, priority, batch); "" = standard
    pricing_assumption: str = ""  # what the price assumed because the span did not say it
    # Values left out while reading the span (field empty or NULL), one reason each: ingest_errors rows.
    problems: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        """The model the call was billed for: the response model, else the requested one."""
        return self.response_model or self.request_model
