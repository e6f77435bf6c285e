"""Every evaluation result a decoded span carries, whichever convention wrote it, as `Evaluation` rows.

Why one reader for several conventions: judges (LLM-as-judge, code checks, people) report their
results in three shapes, and `llm_evaluations` (migration 011) holds one row per result whatever the
shape. The `source` column says which shape a row came from:

- ``event``: the OTel GenAI event ``gen_ai.evaluation.result`` (semantic conventions 1.38+,
  open-telemetry/semantic-conventions-genai ``model/gen-ai/events.yaml``): ``gen_ai.evaluation.name``
  (required), ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.score.label``,
  ``gen_ai.evaluation.explanation``, ``error.type``; ``gen_ai.response.id`` is not stored. The
  convention makes it a log-based event parented to the evaluated operation's span; this pipeline
  reads traces, so it sees the event when an SDK records it as a span event (Strands Agents'
  ``strands.telemetry.evaluation``, langchain-azure-ai's fallback when no Logs API is set up).
  Recorded on the evaluated span, ``span_id`` is that span. Recorded on its parent (an agent span
  judging one of its LLM calls), ``span_id`` is the parent: the event does not name the evaluated
  span, and resolving ``gen_ai.response.id`` would need the trace's other spans.
- ``evaluator_span`` and ``attribute``: OpenInference feedback (Arize-ai/openinference
  ``spec/annotations.md``, #3466), flattened span attributes ``annotations.<i>.annotation.<field>``
  or ``evaluations.<i>.evaluation.<field>`` (fields ``name``, ``score``, ``label``,
  ``explanation``; ``annotator_kind``, ``identifier`` and ``metadata`` are not stored), for the span;
  with a ``trace.`` prefix for the trace (``span_id`` empty), a ``session.`` prefix for the session
  (``trace_id`` and ``span_id`` empty: the table has no session column). ``evaluator_span`` when
  the carrying span is an OpenInference ``EVALUATOR`` span, else ``attribute``. An ``EVALUATOR``
  span without such attributes is read as Phoenix experiments write it
  (``phoenix/experiments/functions.py``): evaluator from the span name ``Evaluation: <name>``,
  bare ``score``, ``label``, ``explanation``; with none of them, an error status is one result
  with only ``error_type``, anything else is no result.
- ``attribute`` also for scores SDKs set as span attributes: ``gen_ai.evaluation.*`` set on a span
  of its own (OpenSearch GenAI SDK ``score.py``: its target in ``gen_ai.evaluation.trace_id`` /
  ``gen_ai.evaluation.span_id``), and TruLens feedback spans (truera/trulens
  ``src/otel/semconv/trulens/otel/semconv/trace.py``: ``ai.observability.span_type`` =
  ``eval_root`` with ``ai.observability.eval_root.metric_name``, ``.score``, ``.explanation``,
  ``.error``). Not read, because they keep scores off spans: Langfuse (its score API;
  langfuse discussion #14652), MLflow (assessments live in the trace's info, ``mlflow.log_feedback``)
  and OpenLLMetry (no evaluation attributes).

The evaluated span: the carrying span, unless feedback was recorded after the fact. OpenInference
says a post-hoc carrier has exactly one span link, to its target, and that parentage never names
the target; so a carrying span with exactly one (valid) link gives the link's trace and span, for
every shape. Dimensions (service, model, prompt name and version, agent) come from the carrying
span's LLM call when it is one, else from its own attributes and resource; a result about another
span (post-hoc, trace or session feedback) keeps only the service, since a carrier's model is the
judge's. The result's time is the event's, else the carrying span's start.

Every value goes through `processors.core.bounds`: names and labels of at most MAX_LABEL_CHARS,
explanations cut at MAX_EXPLANATION_CHARS, scores finite within ±MAX_SCORE. A bad value is stored
empty or NULL and its reason appended to `problems` (the worker's `ingest_errors` rows), as
`normalize.normalize_call` does for a call's names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from processors.core.bounds import (
    MAX_EXPLANATION_CHARS,
    MAX_LABEL_CHARS,
    MAX_SCORE,
    BadValue,
    label,
    number,
    show,
    time_in_range,
)
from processors.core.normalize import PROMPT_NAME_KEYS, PROMPT_VERSION_KEYS, first_value
from processors.core.records import LLMCall, SpanLink, SpanView

__all__ = [
    "Evaluation",
    "EVALUATION_EVENT",
    "EVALUATION_MARKER_KEYS",
    "EVALUATION_KEYS",
    "SOURCE_EVENT",
    "SOURCE_EVALUATOR_SPAN",
    "SOURCE_ATTRIBUTE",
    "evaluations_of",
]

EVALUATION_EVENT: Final = "gen_ai.evaluation.result"
SOURCE_EVENT: Final = "event"
SOURCE_EVALUATOR_SPAN: Final = "evaluator_span"
SOURCE_ATTRIBUTE: Final = "attribute"


@dataclass(slots=True)
class Evaluation:
    """One evaluation result. Mirrors `llm_evaluations` (its delivery columns aside); `ts_ns` is `ts`."""

    ts_ns: int  # Unix ns (UTC)
    trace_id: str  # the evaluated span's trace ("" for session feedback)
    span_id: str  # the evaluated span ("" for trace and session feedback)
    evaluator: str
    score_value: float | None  # None: the result has only a label, or none of it could be read
    score_label: str
    explanation: str
    error_type: str
    service: str
    model: str
    prompt_name: str
    prompt_version: str
    agent: str
    source: str  # SOURCE_EVENT | SOURCE_EVALUATOR_SPAN | SOURCE_ATTRIBUTE


# -- where each convention puts a result ----------------------------------------------------------

_EVENT_NAME: Final = "gen_ai.evaluation.name"
_EVENT_SCORE: Final = "gen_ai.evaluation.score.value"
_EVENT_LABEL: Final = "gen_ai.evaluation.score.label"
_EVENT_EXPLANATION: Final = "gen_ai.evaluation.explanation"
_ERROR_TYPE: Final = "error.type"
# The OpenSearch GenAI SDK's target of a score span (hex ids).
_TARGET_TRACE: Final = "gen_ai.evaluation.trace_id"
_TARGET_SPAN: Final = "gen_ai.evaluation.span_id"

_KIND: Final = "openinference.span.kind"
_EVALUATOR_KIND: Final = "EVALUATOR"
_PHOENIX_SPAN_PREFIX: Final = "Evaluation: "

_TRULENS_TYPE: Final = "ai.observability.span_type"
_TRULENS_ROOT: Final = "eval_root"
_TRULENS_NAME: Final = "ai.observability.eval_root.metric_name"
_TRULENS_SCORE: Final = "ai.observability.eval_root.score"
_TRULENS_EXPLANATION: Final = "ai.observability.eval_root.explanation"
_TRULENS_ERROR: Final = "ai.observability.eval_root.error"

# OpenInference collections: (scope prefix, plural, singular); indices are zero-based (the spec's MUST).
_SCOPES: Final = ("", "trace.", "session.")
_OPENINFERENCE: Final = tuple(
    (scope, plural, plural[:-1]) for scope in _SCOPES for plural in ("annotations", "evaluations")
)
_OPENINFERENCE_KEY: Final = re.compile(
    r"(?P<scope>trace\.|session\.)?(?P<plural>annotation|evaluation)s\.(?P<index>[0-9]{1,6})\."
    r"(?P=plural)\.(?P<field>name|score|label|explanation)"
)
# OpenInference feedback always has an index 0 with a name (an object without one is not read).
_OPENINFERENCE_FIRST: Final = frozenset(
    f"{scope}{plural}.0.{singular}.name" for scope, plural, singular in _OPENINFERENCE
)

# Attribute keys of which a span carrying a result has at least one (besides `gen_ai.evaluation.result`
# events and EVALUATOR spans, which the worker keeps anyway): the decode stage keeps spans with one.
EVALUATION_MARKER_KEYS: Final = frozenset({_EVENT_NAME, _TRULENS_NAME, _TRULENS_SCORE, *_OPENINFERENCE_FIRST})
# A span without any of these keys and without a `gen_ai.evaluation.result` event carries no result: the
# callers' fast path (`attrs.keys().isdisjoint(EVALUATION_KEYS)` looks up each of these in the span's
# attributes, a dict view's isdisjoint running over the smaller set).
EVALUATION_KEYS: Final = frozenset({_EVENT_NAME, _TRULENS_TYPE, _KIND, *_OPENINFERENCE_FIRST})

# Dimensions of a span that is not an LLM call, in precedence order.
_MODEL_KEYS: Final = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
_AGENT_KEYS: Final = ("gen_ai.agent.name", "agent.name")

_HEX: Final = frozenset("0123456789abcdef")
_ERROR_STATUS: Final = 2


@dataclass(slots=True)
class _Raw:
    """One result's values as read from the span, before bounds."""

    where: str  # names the result in problem reasons
    name: Any
    score: Any
    label: Any
    explanation: Any
    error: Any = None
    ts_ns: int = 0  # 0: the carrying span's start
    scope: str = "span"  # "span" | "trace" | "session"


# -- the reader -----------------------------------------------------------------------------------


def evaluations_of(span: SpanView, call: LLMCall | None, problems: list[str]) -> list[Evaluation]:
    """The evaluation results `span` carries (`call` is its LLM call, or None when it is none).

    A value out of its bound is stored empty (NULL for the score), and its reason appended to `problems`;
    a result with nothing readable in it (no name, score, label, explanation or error) is not stored,
    with a reason too. Never raises on span values.
    """
    events = span.events
    attrs = span.attributes
    has_event = False
    for event in events:
        if event.name == EVALUATION_EVENT:
            has_event = True
            break
    if not has_event and attrs.keys().isdisjoint(EVALUATION_KEYS):
        return []  # the common case: an LLM span without results
    evaluator_span = attrs.get(_KIND) == _EVALUATOR_KIND
    raws: list[_Raw] = []
    source = SOURCE_ATTRIBUTE
    if has_event:
        for n, event in enumerate(events):
            if event.name == EVALUATION_EVENT:
                values = event.attributes
                raws.append(
                    _Raw(
                        f"{EVALUATION_EVENT} event {n}",
                        values.get(_EVENT_NAME),
                        values.get(_EVENT_SCORE),
                        values.get(_EVENT_LABEL),
                        values.get(_EVENT_EXPLANATION),
                        values.get(_ERROR_TYPE),
                        _event_time(event.time_ns, n, problems),
                    )
                )
    first_attribute = len(raws)
    if not attrs.keys().isdisjoint(_OPENINFERENCE_FIRST):
        raws.extend(_openinference(attrs, problems))
    if _EVENT_NAME in attrs:
        raws.append(
            _Raw(
                "gen_ai.evaluation attributes",
                attrs.get(_EVENT_NAME),
                attrs.get(_EVENT_SCORE),
                attrs.get(_EVENT_LABEL),
                attrs.get(_EVENT_EXPLANATION),
                attrs.get(_ERROR_TYPE),
            )
        )
    if attrs.get(_TRULENS_TYPE) == _TRULENS_ROOT and (_TRULENS_NAME in attrs or _TRULENS_SCORE in attrs):
        raws.append(
            _Raw(
                "TruLens eval_root",
                attrs.get(_TRULENS_NAME),
                attrs.get(_TRULENS_SCORE),
                None,
                attrs.get(_TRULENS_EXPLANATION),
                attrs.get(_TRULENS_ERROR),
            )
        )
    if evaluator_span:
        source = SOURCE_EVALUATOR_SPAN
        if len(raws) == first_attribute and not has_event:
            raws.extend(_phoenix_experiment(span))
    if not raws:
        return []

    trace_id, span_id, elsewhere = _target(span, attrs, problems)
    here = _dimensions(span, call, problems)
    away = (here[0], "", "", "", "")
    out = []
    for i, raw in enumerate(raws):
        result = _result(raw, problems)
        if result is None:
            continue
        evaluator, score, score_label, explanation, error_type = result
        if raw.scope == "session":
            ids = ("", "")
        elif raw.scope == "trace":
            ids = (trace_id, "")
        else:
            ids = (trace_id, span_id)
        service, model, prompt_name, prompt_version, agent = away if elsewhere or raw.scope != "span" else here
        out.append(
            Evaluation(
                ts_ns=raw.ts_ns or span.start_ns,
                trace_id=ids[0],
                span_id=ids[1],
                evaluator=evaluator,
                score_value=score,
                score_label=score_label,
                explanation=explanation,
                error_type=error_type,
                service=service,
                model=model,
                prompt_name=prompt_name,
                prompt_version=prompt_version,
                agent=agent,
                source=SOURCE_EVENT if i < first_attribute else source,
            )
        )
    return out


def _event_time(time_ns: int, n: int, problems: list[str]) -> int:
    if time_ns == 0 or time_in_range(time_ns):
        return time_ns
    problems.append(
        f"{EVALUATION_EVENT} event {n}: time_unix_nano {show(time_ns)} outside 2000-01-01..2200-01-01: "
        "ts taken from the span start"
    )
    return 0


def _openinference(attrs: Mapping[str, Any], problems: list[str]) -> list[_Raw]:
    """OpenInference feedback objects, in (scope: span, trace, session; terminology; index) order. An object
    without a name (the spec's MUST) is not read: its reason goes to `problems`."""
    found: dict[tuple[str, str, int], dict[str, Any]] = {}
    match = _OPENINFERENCE_KEY.fullmatch
    for key, value in attrs.items():
        if not key.endswith(("name", "score", "label", "explanation")):
            continue
        hit = match(key)
        if hit is not None:
            found.setdefault((hit["scope"] or "", hit["plural"], int(hit["index"])), {})[hit["field"]] = value
    out = []
    for (scope, plural, index), fields in sorted(found.items(), key=lambda item: (_SCOPES.index(item[0][0]), item[0])):
        if fields.get("name") is None:
            problems.append(f"{scope}{plural}s.{index}: no {plural}.name: evaluation not stored")
            continue
        out.append(
            _Raw(
                f"{scope}{plural}s.{index}",
                fields.get("name"),
                fields.get("score"),
                fields.get("label"),
                fields.get("explanation"),
                scope=scope.rstrip(".") or "span",
            )
        )
    return out


def _phoenix_experiment(span: SpanView) -> list[_Raw]:
    """A Phoenix experiment's evaluator span: the result flattened as bare `score`/`label`/`explanation`."""
    attrs = span.attributes
    score, result_label, explanation = attrs.get("score"), attrs.get("label"), attrs.get("explanation")
    failed = span.status_code == _ERROR_STATUS
    if score is None and result_label is None and explanation is None and not failed:
        return []  # the evaluator's work (its own LLM calls are child spans), no result on it
    name = span.name.removeprefix(_PHOENIX_SPAN_PREFIX) if span.name.startswith(_PHOENIX_SPAN_PREFIX) else span.name
    error = None
    if failed and score is None and result_label is None:
        error = _exception_type(span) or "_OTHER"
    return [_Raw("EVALUATOR span", name, score, result_label, explanation, error)]


def _exception_type(span: SpanView) -> Any:
    for event in span.events:
        if event.name == "exception":
            return event.attributes.get("exception.type")
    return None


def _target(span: SpanView, attrs: Mapping[str, Any], problems: list[str]) -> tuple[str, str, bool]:
    """(trace id, span id, whether that is another span than the carrier) of the evaluated span."""
    trace_id, span_id = attrs.get(_TARGET_TRACE), attrs.get(_TARGET_SPAN)
    if trace_id is not None or span_id is not None:
        if _hex_id(trace_id, 32) and (span_id is None or _hex_id(span_id, 16)):
            return str(trace_id).lower(), "" if span_id is None else str(span_id).lower(), True
        problems.append(
            f"{_TARGET_TRACE} {show(trace_id)} / {_TARGET_SPAN} {show(span_id)} name no span: "
            "results attached to the span carrying them"
        )
    elif len(span.links) == 1:
        link: SpanLink = span.links[0]
        if _hex_id(link.trace_id, 32) and _hex_id(link.span_id, 16):
            return link.trace_id, link.span_id, True
        problems.append("the span's one link names no valid span: results attached to the span carrying them")
    return span.trace_id, span.span_id, False


def _hex_id(value: Any, length: int) -> bool:
    return (
        type(value) is str
        and len(value) == length
        and _HEX.issuperset(value.lower())
        and value.strip("0") != ""  # all zeros is OTel's invalid id
    )


def _dimensions(span: SpanView, call: LLMCall | None, problems: list[str]) -> tuple[str, str, str, str, str]:
    """(service, model, prompt name, prompt version, agent) of the carrying span."""
    if call is not None:
        return call.service, call.model, call.prompt_name, call.prompt_version, call.agent
    attrs = span.attributes
    return (
        _name(span.resource.get("service.name"), "service.name", problems),
        _name(first_value(attrs, _MODEL_KEYS), "model", problems),
        _name(first_value(attrs, PROMPT_NAME_KEYS), "prompt name", problems),
        _name(first_value(attrs, PROMPT_VERSION_KEYS), "prompt version", problems),
        _name(first_value(attrs, _AGENT_KEYS), "agent", problems),
    )


def _result(raw: _Raw, problems: list[str]) -> tuple[str, float | None, str, str, str] | None:
    """(evaluator, score, label, explanation, error type) within their bounds, or None for an empty result."""
    if raw.name is None and raw.score is None and raw.label is None and raw.explanation is None and raw.error is None:
        problems.append(f"{raw.where}: no name, score, label, explanation or error: evaluation not stored")
        return None
    where = raw.where
    evaluator = _name(raw.name, f"{where}: evaluation name", problems)
    if raw.name is None:
        problems.append(f"{where}: no evaluation name: evaluator left empty")
    score = None
    if raw.score is not None:
        try:
            score = number(raw.score, -MAX_SCORE, MAX_SCORE, f"{where}: score")
        except BadValue as exc:
            problems.append(f"{exc}: score_value left NULL")
    return (
        evaluator,
        score,
        _name(raw.label, f"{where}: score label", problems),
        _explanation(raw.explanation, where, problems),
        _name(raw.error, f"{where}: error type", problems),
    )


def _name(value: Any, what: str, problems: list[str]) -> str:
    """A name or label of at most MAX_LABEL_CHARS characters; anything else is left empty, with the reason."""
    if value is None:
        return ""
    if type(value) is str and len(value) <= MAX_LABEL_CHARS:
        return value
    try:
        return label(value, what)
    except BadValue as exc:
        problems.append(f"{exc}: left empty")
        return ""


def _explanation(value: Any, where: str, problems: list[str]) -> str:
    """Free text cut at MAX_EXPLANATION_CHARS (with a reason); a value that is no text is left empty."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)) and not (isinstance(value, int) and value.bit_length() > 128):
        return repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        problems.append(f"{where}: explanation of type {type(value).__name__} ({show(value)}): left empty")
        return ""
    if len(value) > MAX_EXPLANATION_CHARS:
        problems.append(f"{where}: explanation of {len(value)} characters cut to {MAX_EXPLANATION_CHARS}")
        return value[:MAX_EXPLANATION_CHARS]
    return value
