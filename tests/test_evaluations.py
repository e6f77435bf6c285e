"""Evaluation results (issue 19, item 3): each convention's shape read with exact values, bad values bounded,
the spans carrying results kept by the decoder, the per-window aggregate's merges and percentiles, and the
OpenTelemetry SDK's own spans through the pipeline into chDB."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from openinference.instrumentation import get_annotation_attributes, get_evaluation_attributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as genai
from opentelemetry.trace import Link, Status, StatusCode, format_span_id, format_trace_id
from scipy import stats as scipy_stats

from llmops.config import Settings
from processors.core.bounds import MAX_EXPLANATION_CHARS, MAX_LABEL_CHARS, MAX_SCORE
from processors.core.decode import decode_request
from processors.core.drift.stream import DriftStageConfig, DriftTracker
from processors.core.drift.wire import MAX_CALL_SCORES, DriftSender, call_scores, decode_payload
from processors.core.evaluation_scores import EVALUATION_SCORES, EvaluationScoresSignal, score_quantiles
from processors.core.evaluations import Evaluation, evaluations_of
from processors.core.normalize import normalize_call
from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, parse_records, worth_decoding
from processors.core.records import SpanEvent, SpanLink, SpanView
from processors.core.sketch import DEFAULT_RELATIVE_ACCURACY
from processors.core.tables import TableRows
from processors.stages import build_call_stages
from sinks.clickhouse.writer import ClickHouseSink
from tests.signal_harness import Record, merged, rows_of, run

T0 = 1_764_000_000 * 10**9
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"
EVENT = "gen_ai.evaluation.result"  # the event's name in the GenAI conventions (1.38+)


def _view(
    attributes: dict[str, Any],
    events: Sequence[SpanEvent] = (),
    links: Sequence[SpanLink] = (),
    resource: dict[str, Any] | None = None,
    name: str = "span",
    status_code: int = 0,
) -> SpanView:
    return SpanView(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        name=name,
        kind=1,
        start_ns=T0,
        end_ns=T0 + 2 * 10**9,
        status_code=status_code,
        status_message="",
        attributes=attributes,
        resource={"service.name": "support-bot"} if resource is None else resource,
        events=list(events),
        links=list(links),
    )


def _event(attributes: dict[str, Any], time_ns: int = T0 + 5 * 10**9) -> SpanEvent:
    return SpanEvent(time_ns, EVENT, attributes)


LLM_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 30,
    "gen_ai.prompt.name": "triage",
    "gen_ai.prompt.version": "7",
    "gen_ai.agent.name": "router",
}


def _read(span: SpanView) -> tuple[list[Evaluation], list[str]]:
    problems: list[str] = []
    return evaluations_of(span, normalize_call(span), problems), problems


# -- each shape, exact values ------------------------------------------------------------------------


def test_an_otel_event_on_the_evaluated_llm_span_takes_the_calls_dimensions() -> None:
    span = _view(
        LLM_ATTRIBUTES,
        [
            SpanEvent(T0 + 10**9, "gen_ai.content.completion.chunk", {}),
            _event(
                {
                    genai.GEN_AI_EVALUATION_NAME: "relevance",
                    genai.GEN_AI_EVALUATION_SCORE_VALUE: 0.75,
                    genai.GEN_AI_EVALUATION_SCORE_LABEL: "relevant",
                    genai.GEN_AI_EVALUATION_EXPLANATION: "Answers the question.",
                    "gen_ai.response.id": "chatcmpl-1",
                }
            ),
            _event({genai.GEN_AI_EVALUATION_NAME: "toxicity", "error.type": "timeout"}, time_ns=T0 + 6 * 10**9),
        ],
    )
    results, problems = _read(span)
    assert problems == []
    dims = ("support-bot", "gpt-4o-2024-08-06", "triage", "7", "router")
    assert results == [
        Evaluation(
            T0 + 5 * 10**9, TRACE, SPAN, "relevance", 0.75, "relevant", "Answers the question.", "", *dims, "event"
        ),
        Evaluation(T0 + 6 * 10**9, TRACE, SPAN, "toxicity", None, "", "", "timeout", *dims, "event"),
    ]


def test_an_otel_event_on_a_parent_span_names_the_parent_and_takes_its_own_dimensions() -> None:
    """The event does not say which child it judged: span_id is the span carrying it (processors/README.md)."""
    span = _view(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support", "gen_ai.request.model": "gpt-4o"},
        [_event({genai.GEN_AI_EVALUATION_NAME: "helpfulness", genai.GEN_AI_EVALUATION_SCORE_VALUE: 4}, time_ns=0)],
        resource={"service.name": "agents"},
    )
    results, problems = _read(span)
    assert problems == []
    # time_unix_nano 0: the result takes the span's start.
    assert results == [
        Evaluation(T0, TRACE, SPAN, "helpfulness", 4.0, "", "", "", "agents", "gpt-4o", "", "", "support", "event")
    ]


def test_openinference_span_feedback_inline_on_an_llm_span_in_both_terminologies() -> None:
    attributes = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "claude-sonnet-4",
        "llm.token_count.prompt": 10,
        "llm.token_count.completion": 5,
        **get_annotation_attributes(
            annotations=[
                {
                    "name": "hallucination",
                    "score": 1,
                    "label": "hallucinated",
                    "explanation": "Not in the context.",
                    "annotator_kind": "LLM",
                    "identifier": "judge-v2",
                    "metadata": {"rubric": 2},
                },
                {"name": "tone", "label": "polite", "annotator_kind": "HUMAN"},
            ]
        ),
        **get_evaluation_attributes(evaluations=[{"name": "correctness", "score": 0.0}]),
    }
    results, problems = _read(_view(attributes))
    assert problems == []
    dims = ("support-bot", "claude-sonnet-4", "", "", "")
    assert results == [
        Evaluation(
            T0, TRACE, SPAN, "hallucination", 1.0, "hallucinated", "Not in the context.", "", *dims, "attribute"
        ),
        Evaluation(T0, TRACE, SPAN, "tone", None, "polite", "", "", *dims, "attribute"),
        Evaluation(T0, TRACE, SPAN, "correctness", 0.0, "", "", "", *dims, "attribute"),
    ]


def test_an_openinference_post_hoc_evaluator_span_judges_its_linked_span() -> None:
    target = SpanLink("4bf92f3577b34da6a3ce929d0e0e4736", "53995c3f42cd8ad8", "", {})
    attributes = {
        "openinference.span.kind": "EVALUATOR",
        "llm.model_name": "judge-model",  # the judge's own model: not the evaluated call's
        **get_evaluation_attributes(evaluations=[{"name": "faithfulness", "score": -0.5, "label": "unfaithful"}]),
        **get_evaluation_attributes(evaluations=[{"name": "coherence", "score": 3}], scope="trace"),
        **get_annotation_attributes(annotations=[{"name": "satisfaction", "label": "happy"}], scope="session"),
    }
    results, problems = _read(_view(attributes, links=[target], resource={"service.name": "evals"}))
    assert problems == []
    away = ("evals", "", "", "", "")
    assert results == [
        Evaluation(
            T0, target.trace_id, target.span_id, "faithfulness", -0.5, "unfaithful", "", "", *away, "evaluator_span"
        ),
        Evaluation(T0, target.trace_id, "", "coherence", 3.0, "", "", "", *away, "evaluator_span"),
        Evaluation(T0, "", "", "satisfaction", None, "happy", "", "", *away, "evaluator_span"),
    ]


def test_a_phoenix_experiment_evaluator_span_and_a_failed_one() -> None:
    scored = _view(
        {"openinference.span.kind": "EVALUATOR", "score": 1, "label": "correct", "explanation": "ok"},
        name="Evaluation: exact_match",
    )
    failed = _view(
        {"openinference.span.kind": "EVALUATOR"},
        [SpanEvent(T0 + 1, "exception", {"exception.type": "ValueError", "exception.message": "bad"})],
        name="Evaluation: judge",
        status_code=2,
    )
    working = _view({"openinference.span.kind": "EVALUATOR", "input.value": "q"}, name="Evaluation: judge")
    (one,), problems = _read(scored)
    assert problems == []
    assert one == Evaluation(
        T0, TRACE, SPAN, "exact_match", 1.0, "correct", "ok", "", "support-bot", "", "", "", "", "evaluator_span"
    )
    (two,), _ = _read(failed)
    assert (two.evaluator, two.score_value, two.error_type) == ("judge", None, "ValueError")
    assert _read(working) == ([], [])


def test_sdk_score_attributes_opensearch_and_trulens() -> None:
    opensearch = _view(
        {
            "gen_ai.evaluation.name": "accuracy",
            "gen_ai.evaluation.score.value": 0.95,
            "gen_ai.evaluation.explanation": "Weather data is correct",
            "gen_ai.evaluation.trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736",
            "gen_ai.evaluation.span_id": "53995c3f42cd8ad8",
        },
        name="gen_ai.evaluation.result",
    )
    trulens = _view(
        {
            "ai.observability.span_type": "eval_root",
            "ai.observability.eval_root.metric_name": "groundedness",
            "ai.observability.eval_root.score": 0.5,
            "ai.observability.eval_root.explanation": "half supported",
        }
    )
    (a,), problems = _read(opensearch)
    assert problems == []
    assert a == Evaluation(
        T0,
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "53995c3f42cd8ad8",
        "accuracy",
        0.95,
        "",
        "Weather data is correct",
        "",
        "support-bot",
        "",
        "",
        "",
        "",
        "attribute",
    )
    (b,), problems = _read(trulens)
    assert problems == []
    assert b == Evaluation(
        T0, TRACE, SPAN, "groundedness", 0.5, "", "half supported", "", "support-bot", "", "", "", "", "attribute"
    )


def test_a_span_without_results_gives_none() -> None:
    assert _read(_view(LLM_ATTRIBUTES, [SpanEvent(T0, "gen_ai.content.completion.chunk", {})])) == ([], [])
    assert _read(_view({"openinference.span.kind": "LLM", "llm.model_name": "m"})) == ([], [])


# -- bad values: bounded or NULL, with a reason; never a crash ----------------------------------------


def test_bad_values_are_stored_bounded_with_a_reason_each() -> None:
    span = _view(
        LLM_ATTRIBUTES,
        [
            _event({"gen_ai.evaluation.name": "nan", "gen_ai.evaluation.score.value": math.nan}),
            _event({"gen_ai.evaluation.name": "huge", "gen_ai.evaluation.score.value": "1e309"}),
            _event({"gen_ai.evaluation.name": "big", "gen_ai.evaluation.score.value": 2 * MAX_SCORE}),
            _event({"gen_ai.evaluation.name": "x" * (MAX_LABEL_CHARS + 1), "gen_ai.evaluation.score.label": "ok"}),
            _event({"gen_ai.evaluation.name": "long", "gen_ai.evaluation.explanation": "why " * 25_000}),
            _event(
                {
                    "gen_ai.evaluation.name": "list",
                    "gen_ai.evaluation.explanation": ["a"],
                    "gen_ai.evaluation.score.label": {"k": 1},
                    "gen_ai.evaluation.score.value": True,
                }
            ),
            _event({"gen_ai.evaluation.score.value": 1}, time_ns=2**63 - 1),
            _event({"gen_ai.response.id": "only-this"}),
        ],
    )
    results, problems = _read(span)
    assert [(r.evaluator, r.score_value, r.score_label) for r in results] == [
        ("nan", None, ""),
        ("huge", None, ""),
        ("big", None, ""),
        ("", None, "ok"),
        ("long", None, ""),
        ("list", None, ""),
        ("", 1.0, ""),
    ]
    assert len(results[4].explanation) == MAX_EXPLANATION_CHARS
    assert results[4].explanation == ("why " * 25_000)[:MAX_EXPLANATION_CHARS]
    assert results[5].explanation == ""
    assert results[6].ts_ns == T0  # an event time outside the window: the span's start
    assert len(problems) == 11, problems
    for fragment in (
        "score nan outside",
        "score '1e309' outside",
        "score 2000000000000.0 outside",
        "longer than 256",
        "100000 characters cut to 8192",
        "explanation of type list",
        "kvlist[1]",
        "is a bool",
        "time_unix_nano",
        "no evaluation name",
        "evaluation not stored",
    ):
        assert any(fragment in problem for problem in problems), fragment


_ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.binary(max_size=20)
    | st.sampled_from(["1e309", "NaN", "-inf", " 42 ", "x" * 9000, "0x10", "1e-400"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
_RESULT_KEYS = st.sampled_from(
    [
        "gen_ai.evaluation.name",
        "gen_ai.evaluation.score.value",
        "gen_ai.evaluation.score.label",
        "gen_ai.evaluation.explanation",
        "error.type",
        "gen_ai.evaluation.trace_id",
        "gen_ai.evaluation.span_id",
        "annotations.0.annotation.name",
        "annotations.0.annotation.score",
        "evaluations.3.evaluation.label",
        "trace.evaluations.0.evaluation.explanation",
        "session.annotations.0.annotation.score",
        "ai.observability.span_type",
        "ai.observability.eval_root.score",
        "openinference.span.kind",
        "score",
        "label",
        "gen_ai.request.model",
        "gen_ai.agent.name",
        "gen_ai.prompt.version",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    event_values=st.lists(st.dictionaries(_RESULT_KEYS, _ANY_VALUE, max_size=6), max_size=3),
    attributes=st.dictionaries(_RESULT_KEYS, _ANY_VALUE, max_size=8),
    event_time=st.integers(0, 2**64 - 1),
    service=_ANY_VALUE,
)
def test_arbitrary_values_never_raise_and_every_stored_value_is_bounded(
    event_values: list[dict[str, Any]], attributes: dict[str, Any], event_time: int, service: Any
) -> None:
    span = _view(
        attributes,
        [SpanEvent(event_time, EVENT, values) for values in event_values],
        resource={"service.name": service},
    )
    problems: list[str] = []
    for result in evaluations_of(span, None, problems):
        for name in (
            "evaluator",
            "score_label",
            "error_type",
            "service",
            "model",
            "prompt_name",
            "prompt_version",
            "agent",
            "trace_id",
            "span_id",
        ):
            value = getattr(result, name)
            assert type(value) is str and len(value) <= MAX_LABEL_CHARS, (name, value)
        assert type(result.explanation) is str and len(result.explanation) <= MAX_EXPLANATION_CHARS
        score = result.score_value
        assert score is None or (type(score) is float and math.isfinite(score) and abs(score) <= MAX_SCORE)
        assert 946_684_800 * 10**9 <= result.ts_ns < 7_258_118_400 * 10**9
    assert all(type(p) is str and len(p) < 2_000 for p in problems)


# -- the decoder keeps every span that carries a result ------------------------------------------------


def _otlp(spans: list[tuple[dict[str, Any], list[str]]]) -> bytes:
    """A request with one span per (attributes, event names), values through the OTLP proto classes."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, (attributes, events) in enumerate(spans):
        span = scope.spans.add(
            trace_id=bytes.fromhex(TRACE),
            span_id=(n + 1).to_bytes(8, "big"),
            name="s",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 1,
        )
        for key, value in attributes.items():
            target = span.attributes.add(key=key).value
            if isinstance(value, str):
                target.string_value = value
            else:
                target.double_value = value
        for name in events:
            event = span.events.add(time_unix_nano=T0 + 1, name=name)
            event.attributes.add(key="gen_ai.evaluation.name").value.string_value = "relevance"
            event.attributes.add(key="gen_ai.evaluation.score.value").value.double_value = 0.5
    return request.SerializeToString()


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(
            st.dictionaries(
                _RESULT_KEYS | st.sampled_from(["http.route", "gen_ai.operation.name"]),
                st.sampled_from(["EVALUATOR", "LLM", "eval_root", "chat", "x"]) | st.floats(-2, 2),
            ),
            st.lists(st.sampled_from([EVENT, "exception", "gen_ai.content.completion.chunk"]), max_size=2),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_span_the_decoder_skips_carries_no_result(spans: list[tuple[dict[str, Any], list[str]]]) -> None:
    wire = _otlp(spans)
    every = decode_request(wire).spans
    kept = {view.span_id for view in decode_request(wire, keep=worth_decoding).spans}
    for view in every:
        if view.span_id not in kept:
            assert evaluations_of(view, None, []) == []
    # A result event alone keeps its span.
    for view, (_, events) in zip(every, spans, strict=True):
        if EVENT in events:
            assert view.span_id in kept


# -- the per-window aggregate --------------------------------------------------------------------------

result_strategy = st.builds(
    Evaluation,
    ts_ns=st.integers(T0, T0 + 3 * 60 * 10**9),
    trace_id=st.just(TRACE),
    span_id=st.just(SPAN),
    evaluator=st.sampled_from(["relevance", "toxicity"]),
    score_value=st.one_of(st.none(), st.sampled_from([0.0, 1.0, -1.0]), st.floats(-1e6, 1e6, allow_nan=False)),
    score_label=st.sampled_from(["", "pass", "fail"]),
    explanation=st.just(""),
    error_type=st.sampled_from(["", "timeout"]),
    service=st.sampled_from(["a", "b"]),
    model=st.sampled_from(["", "gpt-4o"]),
    prompt_name=st.just("p"),
    prompt_version=st.sampled_from(["1", "2"]),
    agent=st.just(""),
    source=st.just("event"),
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.sampled_from(["topic/0", "topic/1", "topic/2"]), st.lists(result_strategy, max_size=4)),
        max_size=20,
    ),
    data=st.data(),
)
def test_any_split_over_batches_and_sources_merges_into_the_same_totals(
    records: list[tuple[str, list[Evaluation]]], data: st.DataObject
) -> None:
    """Counts, label counts and sketches merge exactly; sums within float rounding; min/max exactly."""
    offsets: dict[str, int] = defaultdict(int)
    log = []
    for source, results in records:
        log.append(Record(source, offsets[source], [], results))
        offsets[source] += 1
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(log)), max_size=5))))
    batches = [log[a:b] for a, b in zip([0, *cuts], [*cuts, len(log)], strict=True) if b > a]
    sink = run([EVALUATION_SCORES], batches)
    got = merged(EVALUATION_SCORES.table, sink.rows["llm_evaluation_1m"])

    # The totals straight from the results, grouped by hand (no part of the signal).
    want: dict[tuple[Any, ...], dict[str, Any]] = {}
    for result in (r for record in log for r in record.evaluations):
        key = (
            result.ts_ns // 60_000_000_000 * 60,
            result.evaluator,
            result.service,
            result.model,
            result.prompt_name,
            result.prompt_version,
        )
        row = want.setdefault(key, {"evaluations": 0, "scored": 0, "errors": 0, "scores": [], "labels": {}})
        row["evaluations"] += 1
        row["errors"] += bool(result.error_type)
        if result.score_label:
            row["labels"][result.score_label] = row["labels"].get(result.score_label, 0) + 1
        if result.score_value is not None:
            row["scored"] += 1
            row["scores"].append(result.score_value)
    assert got.keys() == want.keys()
    for key, row in want.items():
        stored = got[key]
        scores = row["scores"]
        assert (stored["evaluations"], stored["scored"], stored["errors"], stored["labels"]) == (
            row["evaluations"],
            row["scored"],
            row["errors"],
            row["labels"],
        )
        assert math.isclose(stored["score_sum"], math.fsum(scores), rel_tol=1e-9, abs_tol=1e-6)
        assert stored["score_min"] == (min(scores) if scores else None)
        assert stored["score_max"] == (max(scores) if scores else None)
        assert stored["zero_scores"] == sum(1 for s in scores if s == 0.0)
        # The sketches of one fold of the key's results: bucket maps add exactly, whatever the split.
        whole = rows_of(EVALUATION_SCORES.rows(EVALUATION_SCORES.fold(EVALUATION_SCORES.new(), _results_of(log, key))))
        (one,) = whole
        assert (stored["sketch"], stored["negative_sketch"]) == (one["sketch"], one["negative_sketch"])
    # Each source's rows carry its highest offset among the records they came from.
    for row in sink.rows["llm_evaluation_1m"]:
        assert row["_ingest_offset"] <= offsets[row["_ingest_source"]] - 1


def _results_of(log: list[Record], key: tuple[Any, ...]) -> list[Evaluation]:
    return [
        r
        for record in log
        for r in record.evaluations
        if (r.ts_ns // 60_000_000_000 * 60, r.evaluator, r.service, r.model, r.prompt_name, r.prompt_version) == key
    ]


@settings(max_examples=80, deadline=None)
@given(
    scores=st.lists(
        st.one_of(st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False), st.floats(1e-6, 10.0), st.integers(0, 5)),
        min_size=1,
        max_size=400,
    ),
    parts=st.integers(1, 5),
)
def test_merged_score_percentiles_are_within_the_sketch_accuracy_of_numpy(scores: list[float], parts: int) -> None:
    """Scores split over `parts` partial rows, sketches merged as sumMap does, quantiles against numpy's."""
    signal = EvaluationScoresSignal()
    pieces = [scores[i::parts] for i in range(parts)]
    positive: dict[int, int] = {}
    negative: dict[int, int] = {}
    zeros = 0
    for piece in pieces:
        results = [Evaluation(T0, TRACE, SPAN, "e", float(s), "", "", "", "", "", "", "", "", "event") for s in piece]
        for row in rows_of(signal.rows(signal.fold(signal.new(), results))):
            for bucket, count in row["sketch"].items():
                positive[bucket] = positive.get(bucket, 0) + count
            for bucket, count in row["negative_sketch"].items():
                negative[bucket] = negative.get(bucket, 0) + count
            zeros += row["zero_scores"]
    qs = [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0]
    got = score_quantiles(positive, negative, zeros, qs)
    want = np.quantile(np.asarray(scores, dtype=np.float64), qs, method="lower")
    for estimate, truth in zip(got.tolist(), want.tolist(), strict=True):
        if truth == 0.0:
            assert estimate == 0.0
        else:
            assert abs(estimate - truth) <= DEFAULT_RELATIVE_ACCURACY * abs(truth) * (1 + 1e-9), (estimate, truth)


def test_no_scores_give_nan_percentiles() -> None:
    assert np.isnan(score_quantiles({}, {}, 0, [0.5])).all()


# -- the OpenTelemetry SDK's own spans through the pipeline into chDB -----------------------------------


@pytest.fixture
def sdk_spans() -> Iterator[list[ReadableSpan]]:
    """An agent span judging its LLM call with an event (no GenAI attribute on it), the LLM call with an event of
    its own, and an OpenInference evaluator span linked to the call after the fact, from the real SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "evals-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("evals-test")
    with tracer.start_as_current_span("handle_request", start_time=T0, end_on_exit=False) as parent:
        with tracer.start_as_current_span(
            "chat gpt-4o",
            start_time=T0 + 10**6,
            end_on_exit=False,
            attributes={
                genai.GEN_AI_OPERATION_NAME: "chat",
                "gen_ai.provider.name": "openai",
                genai.GEN_AI_REQUEST_MODEL: "gpt-4o",
                genai.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
                genai.GEN_AI_USAGE_INPUT_TOKENS: 100,
                genai.GEN_AI_USAGE_OUTPUT_TOKENS: 20,
                "gen_ai.prompt.name": "triage",
                "gen_ai.prompt.version": "3",
            },
        ) as call:
            call.add_event(
                EVENT,
                {
                    genai.GEN_AI_EVALUATION_NAME: "relevance",
                    genai.GEN_AI_EVALUATION_SCORE_VALUE: 0.8,
                    genai.GEN_AI_EVALUATION_SCORE_LABEL: "relevant",
                },
                timestamp=T0 + 3 * 10**9,
            )
            call.add_event(
                EVENT,
                {
                    genai.GEN_AI_EVALUATION_NAME: "relevance",
                    genai.GEN_AI_EVALUATION_SCORE_VALUE: 0.0,
                    genai.GEN_AI_EVALUATION_SCORE_LABEL: "irrelevant",
                },
                timestamp=T0 + 4 * 10**9,
            )
            call.end(end_time=T0 + 2 * 10**9)
        parent.add_event(
            EVENT,
            {
                genai.GEN_AI_EVALUATION_NAME: "task_success",
                genai.GEN_AI_EVALUATION_SCORE_VALUE: 1,
                genai.GEN_AI_EVALUATION_EXPLANATION: "resolved",
            },
            timestamp=T0 + 61 * 10**9,
        )
        parent.end(end_time=T0 + 62 * 10**9)
    evaluator = tracer.start_span(
        "hallucination evaluation",
        start_time=T0 + 70 * 10**9,
        links=[Link(call.get_span_context())],
        attributes={
            "openinference.span.kind": "EVALUATOR",
            **get_evaluation_attributes(evaluations=[{"name": "hallucination", "score": -1, "label": "hallucinated"}]),
        },
    )
    evaluator.set_status(Status(StatusCode.OK))
    evaluator.end(end_time=T0 + 71 * 10**9)
    yield list(exporter.get_finished_spans())
    provider.shutdown()


def test_sdk_spans_through_the_pipeline_into_chdb(chdb_client: Client, sdk_spans: list[ReadableSpan]) -> None:
    record = SourceRecord("otlp_spans", 0, 0, encode_spans(sdk_spans).SerializeToString(), "evals-e2e/0")
    parsed, poison = parse_records([record])
    assert poison == []
    stages = build_call_stages(Settings())
    decoded = decode_parsed(parsed, stages)
    assert decoded[0].problems == []
    sink = ClickHouseSink(chdb_client, "llmops")
    fences = {table: sink.fences(table, {record.source}) for table in stages.tables}
    for rows in build_tables(decoded, fences, stages):
        if isinstance(rows, TableRows) or rows.values:
            sink.write(rows, f"{rows.table}:evals-e2e")

    # What the SDK itself says each result is about.
    by_name = {span.name: span for span in sdk_spans}
    call, parent = by_name["chat gpt-4o"], by_name["handle_request"]

    def ids(span: ReadableSpan) -> tuple[str, str]:
        return format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)

    dims = ("evals-e2e", "gpt-4o-2024-08-06", "triage", "3")
    expected: list[tuple[Any, ...]] = []
    for span, carried_dims in ((call, dims), (parent, ("evals-e2e", "", "", ""))):
        for event in span.events:
            values: dict[str, Any] = dict(event.attributes or {})
            expected.append(
                (
                    *ids(span),
                    values[genai.GEN_AI_EVALUATION_NAME],
                    float(values[genai.GEN_AI_EVALUATION_SCORE_VALUE]),
                    values.get(genai.GEN_AI_EVALUATION_SCORE_LABEL, ""),
                    values.get(genai.GEN_AI_EVALUATION_EXPLANATION, ""),
                    *carried_dims,
                    "event",
                    event.timestamp,
                )
            )
    evaluator = by_name["hallucination evaluation"]
    (link,) = evaluator.links
    expected.append(
        (
            format_trace_id(link.context.trace_id),
            format_span_id(link.context.span_id),
            "hallucination",
            -1.0,
            "hallucinated",
            "",
            "evals-e2e",
            "",
            "",
            "",
            "evaluator_span",
            evaluator.start_time,
        )
    )
    stored = [
        tuple(row)
        for row in chdb_client.query(
            "SELECT trace_id, span_id, evaluator, score_value, score_label, explanation, service, model, prompt_name, "
            "prompt_version, source, toUnixTimestamp64Nano(ts) FROM llmops.llm_evaluations "
            "WHERE _ingest_source = 'evals-e2e/0'"
        ).result_rows
    ]
    assert sorted(stored) == sorted(expected)

    # The per-window aggregate of the same results, merged as a reader does.
    windows: Sequence[Sequence[Any]] = chdb_client.query(
        "SELECT toUnixTimestamp(window_start), evaluator, service, model, prompt_name, prompt_version, "
        "sum(evaluations), sum(scored), sum(score_sum), min(score_min), max(score_max), sumMap(labels), "
        "sum(zero_scores), sumMap(sketch), sumMap(negative_sketch) FROM llmops.llm_evaluation_1m "
        "WHERE _ingest_source = 'evals-e2e/0' GROUP BY ALL"
    ).result_rows
    want: dict[tuple[Any, ...], list[tuple[float, str]]] = defaultdict(list)
    for result in expected:
        want[(result[-1] // 60_000_000_000 * 60, result[2], *result[6:10])].append((result[3], result[4]))
    assert {tuple(row[:6]) for row in windows} == set(want)
    for row in windows:
        results = want[tuple(row[:6])]
        scores = [score for score, _ in results]
        labels: dict[str, int] = defaultdict(int)
        for _, result_label in results:
            if result_label:  # a result without a label is not counted among labels
                labels[result_label] += 1
        assert tuple(row[6:11]) == (len(results), len(scores), sum(scores), min(scores), max(scores))
        assert row[11] == labels
        p50 = score_quantiles(row[13], row[14], row[12], [0.5])[0]
        truth = np.quantile(scores, 0.5, method="lower")
        assert abs(p50 - truth) <= DEFAULT_RELATIVE_ACCURACY * abs(truth)


# -- evaluation scores as a drift signal -----------------------------------------------------------------


def test_a_call_brings_the_drift_stage_only_the_scores_about_itself() -> None:
    span = _view(
        LLM_ATTRIBUTES,
        [
            _event({"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.5}),
            _event({"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 1}),
            _event({"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": "polite"}),  # no score
            _event({"gen_ai.evaluation.name": "toxicity", "gen_ai.evaluation.score.value": "NaN"}),  # bad: NULL
        ],
    )
    call = normalize_call(span)
    assert call is not None
    assert call_scores(call, span) == {"relevance": [0.5, 1.0]}
    linked = _view(LLM_ATTRIBUTES, span.events, links=[SpanLink("4bf92f3577b34da6a3ce929d0e0e4736", "53995c3f42cd8ad8",
                                                               "", {})])  # fmt: skip
    linked_call = normalize_call(linked)
    assert linked_call is not None
    assert call_scores(linked_call, linked) == {}  # the results are about the linked span, not this call
    many = _view(LLM_ATTRIBUTES, [_event({"gen_ai.evaluation.name": "e", "gen_ai.evaluation.score.value": n})
                                  for n in range(MAX_CALL_SCORES + 5)])  # fmt: skip
    many_call = normalize_call(many)
    assert many_call is not None
    assert call_scores(many_call, many) == {"e": [float(n) for n in range(MAX_CALL_SCORES)]}


def _scored_calls(start_s: int, scores: Sequence[float], version: str = "7") -> tuple[list[Any], list[SpanView]]:
    calls, spans = [], []
    for n, score in enumerate(scores):
        span = _view(
            {**LLM_ATTRIBUTES, "gen_ai.prompt.version": version},
            [_event({"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": score},
                    time_ns=start_s * 10**9 + n * 10**8 + 1)],
        )  # fmt: skip
        span.start_ns = span.end_ns = start_s * 10**9 + n * 10**8
        span.span_id = f"{start_s % 10**8:08x}{n:08x}"
        call = normalize_call(span)
        assert call is not None
        calls.append(call)
        spans.append(span)
    return calls, spans


def test_the_drift_stage_tests_each_evaluators_scores_against_its_reference_with_scipys_ks() -> None:
    """Scores from the worker's drift records (`DriftSender`, `decode_payload`) into the tracker: per key (here
    two prompt versions), the window's `score:<evaluator>` against the key's previous window, D and p as scipy's
    ks_2samp gives them; a shifted score distribution drifts, an unchanged one does not."""
    window = 60
    t0 = T0 // 10**9 // window * window
    rng = np.random.default_rng(7)
    samples = {
        "7": (rng.normal(0.8, 0.1, 200).round(3), rng.normal(0.65, 0.1, 200).round(3)),  # scores dropped
        "8": (rng.normal(0.8, 0.1, 150).round(3), rng.normal(0.8, 0.1, 250).round(3)),  # same distribution
    }
    sender = DriftSender(window, sample_size=400, max_windows=8)
    tracker = DriftTracker(
        DriftStageConfig(window_s=window, lateness_s=1, idle_close_s=1e9, reservoir_size=400),
        clock=lambda: float(t0 + 100 * window),
    )
    for version, (before, after) in samples.items():
        # The last batch moves the key's watermark past the judged window.
        for start, scores in ((t0, before.tolist()), (t0 + window, after.tolist()), (t0 + 3 * window, [0.5])):
            calls, spans = _scored_calls(start, scores, version)
            for _, value in sender.payloads(calls, spans):
                record = decode_payload(value)
                tracker.add(record.service, record.calls, record.tallies)
    drift, _ = tracker.close()
    rows = [dict(zip(drift.column_names, row, strict=True)) for row in zip(*drift.columns, strict=True)]
    for version, (before, after) in samples.items():
        judged = [r for r in rows if r["window_start"] == (t0 + window) * 1000 and r["prompt_version"] == version]
        # The window's tests: the scores' KS, output_tokens' KS and finish_reason's chi2 (both sides equal: p = 1).
        assert {(r["signal"], r["statistic"]) for r in judged if r["p_value"] is not None} == {
            ("score:relevance", "ks"), ("output_tokens", "ks"), ("finish_reason", "chi2")}  # fmt: skip
        (ks,) = [r for r in judged if r["signal"] == "score:relevance" and r["statistic"] == "ks"]
        reference = scipy_stats.ks_2samp(before, after)
        assert (ks["service"], ks["model"], ks["prompt_name"]) == ("support-bot", "gpt-4o-2024-08-06", "triage")
        assert (ks["n_ref"], ks["n_cur"]) == (before.size, after.size)
        assert ks["value"] == pytest.approx(float(reference.statistic), rel=1e-12, abs=0)
        # Holm over three p-values of which two are 1: the smallest is multiplied by 3.
        assert ks["p_value"] == pytest.approx(min(1.0, 3 * float(reference.pvalue)), rel=1e-9, abs=0)
        assert ks["drifted"] == (version == "7")
