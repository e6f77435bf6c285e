"""What `llmops loadgen` sends and how: its options, and the OpenTelemetry SDK wiring every scenario shares.

Why a module of its own: the LLM-call scenarios (`loadgen.py`) and the agent-run scenario
(`loadgen_agents.py`) send through the same SDK pieces (one TracerProvider per service, its
BatchSpanProcessor and OTLP exporter, ids planned from the seed, a queue the generator waits on
instead of overflowing), and count the same way: only spans the endpoint acknowledged
(`SpanExportResult.SUCCESS`).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal, Protocol

import grpc
import requests
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from pydantic import BaseModel, ConfigDict, Field, model_validator

from processors.core.agents.runaway import RunawayRules

__all__ = [
    "DEFAULT_SERVICES",
    "LoadgenOptions",
    "Flow",
    "PlannedIds",
    "Recorder",
    "Senders",
    "timeline",
]

DEFAULT_SERVICES: tuple[str, ...] = ("checkout-assistant", "support-bot", "search-rag")

_DEFAULT_COUNT = 1000
_DEFAULT_RUNS = 100  # agent runs: each is tens of spans
_COUNT_MODE_STEP_NS = 10_000_000  # event-time spacing of calls in count mode when not given
_AGENT_STEP_NS = 1_000_000_000  # event-time spacing of agent run starts in count mode when not given
_LAG_NS = 60_000_000_000  # default timelines end this far behind the wall clock, so spans have ended
# Agent runs last up to a few minutes of event time: their timeline starts further back, so a run's
# spans have ended (in event time) before the wall clock reaches them.
_AGENT_LAG_NS = 600_000_000_000
_RULES = RunawayRules()


class LoadgenOptions(BaseModel):
    """What to send, where, and how fast. Count mode unless `rate` and `duration_s` are set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(
        "http://127.0.0.1:4318",
        description="OTLP endpoint. HTTP: base URL (spans go to <endpoint>/v1/traces); gRPC: host:port or URL.",
    )
    protocol: Literal["http/protobuf", "grpc"] = Field("http/protobuf", description="OTLP transport.")
    count: int | None = Field(
        None,
        ge=1,
        description=f"LLM calls to send as fast as the exporter accepts (default {_DEFAULT_COUNT}); "
        f"agent runs in the agents scenario (default {_DEFAULT_RUNS}).",
    )
    rate: float | None = Field(
        None, gt=0, description="LLM calls (agents scenario: runs) per second (rate mode, with duration_s)."
    )
    duration_s: float | None = Field(None, gt=0, description="Length of a rate-mode run in seconds.")
    seed: int = Field(0, description="Seed; the same seed and timeline give the same spans, ids included.")
    scenario: Literal["mixed", "drift", "agents"] = Field(
        "mixed",
        description="mixed: steady traffic. drift: one key switches prompt version mid-run and its answers change. "
        "agents: agent runs (nested agents, tools, MCP tools, loops, evaluations) with their ground truth.",
    )
    services: tuple[str, ...] = Field(
        DEFAULT_SERVICES, min_length=1, description="Services to simulate (unknown names get a generic profile)."
    )
    environment: str = Field("production", description="deployment.environment.name of every service.")
    max_export_batch_size: int = Field(512, ge=1, description="BatchSpanProcessor max_export_batch_size.")
    max_queue_size: int = Field(
        2048, ge=1, description="BatchSpanProcessor max_queue_size; the generator waits instead of overflowing it."
    )
    schedule_delay_ms: float = Field(50.0, gt=0, description="BatchSpanProcessor schedule delay.")
    export_timeout_s: float = Field(10.0, gt=0, description="Exporter timeout per request, retries included.")
    compression: Literal["none", "gzip"] = Field("none", description="Exporter compression.")
    insecure: bool = Field(True, description="gRPC without TLS.")
    stop_on_failure: bool = Field(
        True, description="Stop generating once an export fails (the endpoint is down or refusing)."
    )
    start_ns: int | None = Field(
        None,
        ge=0,
        description="Start time (Unix ns) of LLM call (agent run) 0. Unset: the timeline ends before now.",
    )
    time_step_ns: int | None = Field(
        None,
        ge=0,
        description="Event-time spacing of LLM call (agent run) starts. Unset: 1/rate, else 10 ms (agents: 1 s).",
    )
    loop_repeats: int = Field(
        _RULES.loop_repeats,
        ge=2,
        description="agents: a looping run calls one tool with the same arguments at least this often; "
        "no other run repeats a call this often (the runaway rule's agents.loop_repeats).",
    )
    max_llm_calls: int = Field(
        _RULES.max_llm_calls,
        ge=1,
        description="agents: runaway runs make more LLM calls than this; the others stay at or below it.",
    )
    max_cost_usd: Decimal = Field(
        _RULES.max_cost_usd,
        gt=0,
        description="agents: the ground truth lists the runs that cost more than this (USD).",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> LoadgenOptions:
        if (self.rate is None) != (self.duration_s is None):
            raise ValueError("rate and duration_s go together")
        if self.rate is not None and self.count is not None:
            raise ValueError("give either count or rate + duration_s, not both")
        if self.rate is not None and self.duration_s is not None and round(self.rate * self.duration_s) < 1:
            raise ValueError("rate * duration_s must be at least one call")
        if self.max_export_batch_size > self.max_queue_size:
            raise ValueError("max_export_batch_size must not exceed max_queue_size")
        if len(set(self.services)) != len(self.services):
            raise ValueError("services must be unique")
        return self

    @property
    def total_calls(self) -> int:
        """LLM calls this run sends (agent runs in the agents scenario)."""
        if self.rate is not None and self.duration_s is not None:
            return round(self.rate * self.duration_s)
        return self.count or (_DEFAULT_RUNS if self.scenario == "agents" else _DEFAULT_COUNT)


def timeline(options: LoadgenOptions, total: int) -> tuple[int, int]:
    """(start of call or run 0, event-time step between starts), in Unix ns."""
    agents = options.scenario == "agents"
    if options.time_step_ns is not None:
        step = options.time_step_ns
    elif options.rate is not None:
        step = round(1e9 / options.rate)
    else:
        step = _AGENT_STEP_NS if agents else _COUNT_MODE_STEP_NS
    if options.start_ns is not None:
        return options.start_ns, step
    now = time.time_ns() - (_AGENT_LAG_NS if agents else _LAG_NS)
    return (now if options.rate is not None else now - (total - 1) * step), step


class PlannedIds(IdGenerator):
    """Hands the SDK the ids planned for the current call or run, so the seed fixes every id."""

    def __init__(self) -> None:
        self._trace_id = 0
        self._span_ids: list[int] = []

    def load(self, trace_id: int, span_ids: Sequence[int]) -> None:
        self._trace_id = trace_id
        self._span_ids = list(reversed(span_ids))

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        return self._span_ids.pop()


class Flow:
    """Blocks the generator while a processor's queue is full: BatchSpanProcessor drops on overflow."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._queued = 0
        self._cond = threading.Condition()

    def reserve(self, spans: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._queued + spans <= self._capacity)
            self._queued += spans

    def taken(self, spans: int) -> None:
        with self._cond:
            self._queued -= spans
            self._cond.notify_all()


class Recorder(Protocol):
    """Counts exported spans; called from the exporter threads with each batch and whether it was acknowledged."""

    def record(self, spans: Sequence[ReadableSpan], ok: bool) -> None: ...


class _AckingExporter(SpanExporter):
    """Wraps the OTLP exporter: frees queue room and tells the recorders what the endpoint acknowledged."""

    def __init__(self, inner: SpanExporter, flow: Flow, recorders: Sequence[Recorder]) -> None:
        self._inner = inner
        self._flow = flow
        self._recorders = recorders

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._flow.taken(len(spans))
        result = self._inner.export(spans)
        for recorder in self._recorders:
            recorder.record(spans, result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _traces_url(endpoint: str) -> str:
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    return base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"


def _make_exporter(options: LoadgenOptions) -> SpanExporter:
    gzip = options.compression == "gzip"
    if options.protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=options.endpoint,
            insecure=options.insecure,
            timeout=options.export_timeout_s,
            compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
            channel_options=(("grpc.enable_http_proxy", 0),),  # type: ignore[arg-type]
        )
    session = requests.Session()
    session.trust_env = False  # the endpoint only: no proxy from the environment
    return HttpSpanExporter(
        endpoint=_traces_url(options.endpoint),
        timeout=options.export_timeout_s,
        compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression,
        session=session,
    )


class Senders:
    """One TracerProvider per service (its resource, BatchSpanProcessor and exporter), sharing planned ids."""

    def __init__(
        self, options: LoadgenOptions, resources: Mapping[str, tuple[str, str]], recorders: Sequence[Recorder]
    ) -> None:
        """`resources`: service name -> (service.version, team)."""
        self.ids = PlannedIds()
        self.tracers: dict[str, trace_api.Tracer] = {}
        self.flows: dict[str, Flow] = {}
        self._providers: list[TracerProvider] = []
        for name, (version, team) in resources.items():
            self.flows[name] = Flow(options.max_queue_size)
            provider = TracerProvider(
                sampler=ALWAYS_ON,
                resource=Resource.create(
                    {
                        "service.name": name,
                        "service.version": version,
                        "service.instance.id": str(
                            uuid.UUID(int=random.Random(f"{options.seed}:{name}").getrandbits(128), version=4)
                        ),
                        "deployment.environment.name": options.environment,
                        "team": team,
                    }
                ),
                shutdown_on_exit=False,
                id_generator=self.ids,
            )
            provider.add_span_processor(
                BatchSpanProcessor(
                    _AckingExporter(_make_exporter(options), self.flows[name], recorders),
                    max_queue_size=options.max_queue_size,
                    schedule_delay_millis=options.schedule_delay_ms,
                    max_export_batch_size=options.max_export_batch_size,
                    export_timeout_millis=options.export_timeout_s * 1000,
                )
            )
            self._providers.append(provider)
            self.tracers[name] = provider.get_tracer("llmops.loadgen")

    def close(self) -> None:
        """Export what is queued, then shut the providers down."""
        for provider in self._providers:
            provider.force_flush()
            provider.shutdown()
