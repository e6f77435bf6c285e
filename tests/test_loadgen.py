"""`llmops loadgen` against real OTLP sinks (HTTP and gRPC) on loopback.

The sinks decode ExportTraceServiceRequest with opentelemetry-proto; every
number in the summary is recomputed here from the received spans.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError
from scipy import stats

from llmops.loadgen import LoadgenOptions, LoadgenSummary, UsageTotals, render_summary, run_loadgen
from tests.otlp_sink import otlp_grpc_sink, otlp_http_sink

MINUTE_NS = 60_000_000_000
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, a minute boundary
LLM_OPS = {"chat", "text_completion", "embeddings"}


# --------------------------------------------------------------------------- sinks


class _Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.bytes = 0

    def add(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self.lock:
            self.requests.append(request)
            self.bytes += len(body)


@contextmanager
def http_sink(status: int = 200) -> Iterator[tuple[str, _Received]]:
    """OTLP/HTTP sink; any status other than 200 rejects the request (400 is not retried by the exporter)."""
    received = _Received()
    with otlp_http_sink(received.add, status) as url:
        yield url, received


@contextmanager
def grpc_sink() -> Iterator[tuple[str, _Received]]:
    received = _Received()
    with otlp_grpc_sink(received.add) as endpoint:
        yield endpoint, received


# --------------------------------------------------------------------------- decoding


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class Got:
    resource: dict[str, Any]
    span: Span
    attrs: dict[str, Any]

    @property
    def is_llm(self) -> bool:
        return self.attrs.get("gen_ai.operation.name") in LLM_OPS


def spans_of(received: _Received) -> list[Got]:
    out = []
    for request in received.requests:
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append(Got(resource, span, {kv.key: _value(kv.value) for kv in span.attributes}))
    return out


def totals_from_spans(spans: list[Got], key: str) -> dict[str, UsageTotals]:
    """Independent recomputation of the summary tables from the decoded spans."""
    out: dict[str, UsageTotals] = defaultdict(UsageTotals)
    for g in spans:
        if not g.is_llm:
            continue
        name = g.attrs["gen_ai.request.model"] if key == "model" else g.resource["service.name"]
        t = out[name]
        t.calls += 1
        t.errors += g.span.status.code == Status.STATUS_CODE_ERROR
        t.streamed += g.attrs.get("gen_ai.request.stream") is True
        t.ttft_attribute += "gen_ai.response.time_to_first_chunk" in g.attrs
        t.ttft_event += any(e.name == "gen_ai.content.completion.chunk" for e in g.span.events)
        t.input_tokens += g.attrs.get("gen_ai.usage.input_tokens", 0)
        t.output_tokens += g.attrs.get("gen_ai.usage.output_tokens", 0)
        t.cache_read_tokens += g.attrs.get("gen_ai.usage.cache_read.input_tokens", 0)
        t.cache_write_tokens += g.attrs.get("gen_ai.usage.cache_creation.input_tokens", 0)
        t.reasoning_tokens += g.attrs.get("gen_ai.usage.reasoning.output_tokens", 0)
    return dict(out)


def assert_summary_matches(summary: LoadgenSummary, spans: list[Got], count: int) -> None:
    assert summary.complete and summary.spans_failed == 0
    assert summary.calls_sent == count
    assert len(spans) == summary.spans_sent == summary.spans_acknowledged
    assert sum(g.is_llm for g in spans) == summary.llm_spans_acknowledged == count
    assert totals_from_spans(spans, "model") == summary.by_model
    assert totals_from_spans(spans, "service") == summary.by_service
    assert dict(Counter(g.resource["service.name"] for g in spans)) == summary.spans_by_service


def canonical(spans: list[Got]) -> list[bytes]:
    """Spans with their resource, order-free, for exact comparison between runs."""
    return sorted(
        json.dumps(g.resource, sort_keys=True).encode() + g.span.SerializeToString(deterministic=True) for g in spans
    )


def run(endpoint: str, **kw: Any) -> LoadgenSummary:
    base: dict[str, Any] = {"endpoint": endpoint, "start_ns": START_NS, "time_step_ns": 1_000_000_000}
    return run_loadgen(LoadgenOptions(**(base | kw)))


# --------------------------------------------------------------------------- tests


def test_http_sink_receives_exactly_what_the_summary_counts() -> None:
    progress: list[tuple[int, int]] = []
    with http_sink() as (endpoint, received):
        summary = run_loadgen(
            LoadgenOptions(
                endpoint=endpoint,
                count=300,
                seed=7,
                compression="gzip",
                start_ns=START_NS,
                time_step_ns=1_000_000_000,
                max_export_batch_size=64,
                max_queue_size=96,  # small queue: the generator must wait for room
            ),
            progress=lambda sent, total: progress.append((sent, total)),
        )
    spans = spans_of(received)
    assert_summary_matches(summary, spans, 300)
    assert len(received.requests) > 3  # several batches

    # progress: about every 1%, increasing, ending at (total, total)
    assert progress[-1] == (300, 300) and len(progress) == 100
    assert [s for s, _ in progress] == sorted({s for s, _ in progress})

    # LLM call i starts at start_ns + i * step exactly: 60 calls per minute
    llm = [g for g in spans if g.is_llm]
    assert sorted(g.span.start_time_unix_nano for g in llm) == [START_NS + i * 1_000_000_000 for i in range(300)]
    per_minute = Counter((g.span.start_time_unix_nano - START_NS) // MINUTE_NS for g in llm)
    assert per_minute == {0: 60, 1: 60, 2: 60, 3: 60, 4: 60}

    by_id = {g.span.span_id: g for g in spans}
    assert len(by_id) == len(spans)
    for g in llm:
        a = g.attrs
        parent = by_id[g.span.parent_span_id]
        assert parent.span.kind == Span.SPAN_KIND_SERVER and parent.span.trace_id == g.span.trace_id
        assert (
            parent.span.start_time_unix_nano
            < g.span.start_time_unix_nano
            < g.span.end_time_unix_nano
            < parent.span.end_time_unix_nano
        )
        assert g.span.kind == Span.SPAN_KIND_CLIENT
        assert g.span.name == f"{a['gen_ai.operation.name']} {a['gen_ai.request.model']}"
        assert {"service.name", "deployment.environment.name", "team"} <= g.resource.keys()
        duration = g.span.end_time_unix_nano - g.span.start_time_unix_nano
        if g.span.status.code == Status.STATUS_CODE_ERROR:
            assert a["error.type"] and "gen_ai.usage.input_tokens" not in a
            assert parent.span.status.code == Status.STATUS_CODE_ERROR
            continue
        assert (
            a.get("gen_ai.usage.cache_read.input_tokens", 0) + a.get("gen_ai.usage.cache_creation.input_tokens", 0)
            <= a["gen_ai.usage.input_tokens"]
        )
        assert a.get("gen_ai.usage.reasoning.output_tokens", 0) <= a.get("gen_ai.usage.output_tokens", 0)
        if "gen_ai.response.time_to_first_chunk" in a:
            assert a.get("gen_ai.request.stream") is True
            assert 0 < a["gen_ai.response.time_to_first_chunk"] * 1e9 <= duration
        for event in g.span.events:
            assert event.name == "gen_ai.content.completion.chunk"
            assert g.span.start_time_unix_nano < event.time_unix_nano <= g.span.end_time_unix_nano
        if "gen_ai.output.messages" in a:
            (message,) = json.loads(a["gen_ai.output.messages"])
            assert message["role"] == "assistant" and message["parts"][0]["type"] in {"text", "tool_call"}
            assert message["finish_reason"] in {"stop", "length", "tool_call"}
        if a["gen_ai.operation.name"] != "embeddings":
            (reason,) = a["gen_ai.response.finish_reasons"]
            assert reason in {"stop", "length", "tool_calls"}
            if reason == "length":
                assert a["gen_ai.usage.output_tokens"] == a["gen_ai.request.max_tokens"]

    # every TTFT source and every kind of span shows up
    total = UsageTotals(
        **{f: sum(getattr(t, f) for t in summary.by_model.values()) for f in UsageTotals.__dataclass_fields__}
    )
    assert total.ttft_attribute > 0 and total.ttft_event > 0 and total.errors > 0
    assert total.cache_read_tokens > 0 and total.cache_write_tokens > 0 and total.reasoning_tokens > 0
    assert {
        "gpt-4o",
        "gpt-4o-mini",
        "o4-mini",
        "claude-sonnet-4",
        "gemini-2.5-flash",
        "acme-llama-ft-v3",
        "text-embedding-3-small",
    } <= summary.by_model.keys()
    assert any(g.span.name.startswith("search ") for g in spans)
    assert {a.attrs.get("gen_ai.response.model") for a in llm} >= {"claude-sonnet-4-20250514", "gpt-4o-2024-08-06"}

    text = render_summary(summary)
    assert "claude-sonnet-4" in text and "support-bot" in text
    json.dumps(summary.to_dict())


def test_grpc_sink_receives_exactly_what_the_summary_counts() -> None:
    with grpc_sink() as (endpoint, received):
        summary = run(
            endpoint,
            protocol="grpc",
            count=300,
            seed=11,
            max_export_batch_size=100,
            services=("checkout-assistant", "billing-api"),
        )
    spans = spans_of(received)
    assert_summary_matches(summary, spans, 300)
    # an unknown service name gets the generic profile
    teams = {g.resource["service.name"]: g.resource["team"] for g in spans}
    assert teams == {"checkout-assistant": "commerce", "billing-api": "platform"}
    assert {
        g.attrs.get("gen_ai.prompt.name") for g in spans if g.is_llm and g.resource["service.name"] == "billing-api"
    } == {"billing-api-default"}


def test_rate_mode_sends_rate_times_duration_calls() -> None:
    with grpc_sink() as (endpoint, received):
        summary = run(endpoint, protocol="grpc", rate=400.0, duration_s=0.25, seed=3, time_step_ns=None)
    assert summary.time_step_ns == 2_500_000
    assert_summary_matches(summary, spans_of(received), 100)


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    runs = []
    for seed in (5, 5, 6):
        with http_sink() as (endpoint, received):
            run(endpoint, count=120, seed=seed, max_export_batch_size=50)
        runs.append(canonical(spans_of(received)))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_drift_switches_prompt_version_for_one_key_only() -> None:
    count = 600
    with http_sink() as (endpoint, received):
        mixed = run(endpoint, count=count, seed=21)
    mixed_spans = spans_of(received)
    with http_sink() as (endpoint, received):
        drift = run(endpoint, count=count, seed=21, scenario="drift")
    drift_spans = spans_of(received)
    assert_summary_matches(drift, drift_spans, count)
    d = drift.drift
    assert d is not None and mixed.drift is None

    def key(g: Got) -> tuple[str, str, str]:
        return g.resource["service.name"], g.attrs["gen_ai.request.model"], g.attrs.get("gen_ai.prompt.name", "")

    def index(g: Got) -> int:
        return (g.span.start_time_unix_nano - START_NS) // 1_000_000_000

    versions: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for g in drift_spans:
        if g.is_llm and "gen_ai.prompt.version" in g.attrs:
            versions[key(g)].add(g.attrs["gen_ai.prompt.version"])
    changed = [k for k, v in versions.items() if len(v) > 1]
    assert changed == [(d.service, d.model, d.prompt_name)]
    assert versions[changed[0]] == {d.from_version, d.to_version} == {"v3", "v4"}

    drift_key = [g for g in drift_spans if g.is_llm and key(g) == changed[0]]
    after = [g for g in drift_key if g.attrs["gen_ai.prompt.version"] == "v4"]
    before = [g for g in drift_key if g.attrs["gen_ai.prompt.version"] == "v3"]
    assert min(index(g) for g in after) == d.switch_call_index >= count // 2 > max(index(g) for g in before)
    assert d.switch_time_ns == START_NS + d.switch_call_index * 1_000_000_000
    assert (len(before), len(after)) == (d.calls_before, d.calls_after)

    # other keys, and the drifted key before the switch, are exactly the mixed run's spans
    drifted_traces = {g.span.trace_id for g in after}
    assert canonical([g for g in drift_spans if g.span.trace_id not in drifted_traces]) == canonical(
        [g for g in mixed_spans if g.span.trace_id not in drifted_traces]
    )

    # the answers changed: longer (Mann-Whitney), more often cut at max_tokens or refused
    def ok(gs: list[Got]) -> list[Got]:
        return [g for g in gs if g.span.status.code != Status.STATUS_CODE_ERROR]

    out_before = [g.attrs["gen_ai.usage.output_tokens"] for g in ok(before)]
    out_after = [g.attrs["gen_ai.usage.output_tokens"] for g in ok(after)]
    assert stats.mannwhitneyu(out_after, out_before, alternative="greater").pvalue < 0.01

    def share_cut_or_refused(gs: list[Got]) -> float:
        bad = 0
        for g in gs:
            (message,) = json.loads(g.attrs["gen_ai.output.messages"])
            bad += message["finish_reason"] == "length" or message["parts"][0].get("content", "").startswith(
                "I'm sorry"
            )
        return bad / len(gs)

    assert share_cut_or_refused(ok(after)) > share_cut_or_refused(ok(before)) + 0.1

    # token distributions: log(input tokens) of gpt-4o-mini is normal(log 1200, 1.0) as configured
    logs = [
        math.log(g.attrs["gen_ai.usage.input_tokens"])
        for g in ok(mixed_spans)
        if g.is_llm and g.attrs["gen_ai.request.model"] == "gpt-4o-mini"
    ]
    assert len(logs) > 80
    assert stats.kstest(logs, stats.norm(math.log(1200), 1.0).cdf).pvalue > 0.01


def test_rejected_exports_are_counted_as_failed_not_acknowledged() -> None:
    with http_sink(status=400) as (endpoint, received):
        summary = run(endpoint, count=400, seed=2, max_export_batch_size=32, max_queue_size=32)
    assert received.requests == []
    assert summary.spans_acknowledged == 0 and summary.llm_spans_acknowledged == 0 and summary.by_model == {}
    assert summary.spans_failed == summary.spans_sent > 0 and not summary.complete
    assert summary.calls_sent <= 400


def test_options_validation() -> None:
    with pytest.raises(ValidationError):
        LoadgenOptions(rate=10.0)
    with pytest.raises(ValidationError):
        LoadgenOptions(count=10, rate=10.0, duration_s=1.0)
    with pytest.raises(ValidationError):
        LoadgenOptions(max_export_batch_size=4096)
    with pytest.raises(ValidationError):
        LoadgenOptions(bogus=1)  # type: ignore[call-arg]  # an unknown field, on purpose
    assert LoadgenOptions().total_calls == 1000
    assert LoadgenOptions(rate=50.0, duration_s=2.0).total_calls == 100
    assert astuple(UsageTotals()) == (0,) * 10
