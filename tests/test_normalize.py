"""Normalisation per convention, with attribute sets as the instrumentations write them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from processors.core.normalize import NormalizeOptions, normalize_call, normalize_provider
from processors.core.records import LLMCall, SpanView

RESOURCE = {"service.name": "rag-api", "deployment.environment.name": "prod", "team": "search"}


def span(attributes: dict, resource: dict | None = None, status: int = 0, scope: str = "") -> SpanView:
    return SpanView(
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        parent_span_id="",
        name="chat",
        kind=3,
        start_ns=1_764_000_000_000_000_000,
        end_ns=1_764_000_001_250_000_000,
        status_code=status,
        status_message="",
        attributes=attributes,
        resource=RESOURCE if resource is None else resource,
        scope_name=scope,
    )


def llm_call(view: SpanView, options: NormalizeOptions | None = None) -> LLMCall:
    """normalize_call of a span that is an LLM call."""
    call = normalize_call(view, options)
    assert call is not None, "not an LLM call"
    return call


def test_otel_genai_current_names() -> None:
    call = normalize_call(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cache_creation.input_tokens": 0,
                "gen_ai.usage.reasoning.output_tokens": 50,
                "gen_ai.response.finish_reasons": ["length", "stop"],
                "gen_ai.agent.name": "planner",
                "gen_ai.prompt.name": "answer",
                "gen_ai.conversation.id": "conv-1",
                "gen_ai.usage.cost": 0.00475,
            }
        )
    )
    assert call is not None
    assert (call.convention, call.provider, call.operation) == ("otel_genai", "openai", "chat")
    assert (call.request_model, call.response_model) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens, call.reasoning_tokens) == (
        1200,
        300,
        1000,
        50,
    )
    assert (call.agent, call.prompt_name, call.conversation_id, call.finish_reason) == (
        "planner",
        "answer",
        "conv-1",
        "length",
    )
    assert (call.service, call.environment, call.team) == ("rag-api", "prod", "search")
    assert call.reported_cost == Decimal("0.00475")
    assert call.duration_ms == 1250.0 and call.ts_ns == 1_764_000_000_000_000_000
    assert call.cost is None and call.ttft_ms is None and call.status == "ok"


def test_otel_genai_deprecated_names_and_error() -> None:
    call = normalize_call(
        span(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.prompt_tokens": 10,
                "gen_ai.usage.completion_tokens": 4,
                "error.type": "RateLimitError",
            },
            resource={"service.name": "old", "deployment.environment": "staging"},
            status=2,
        )
    )
    assert call is not None and call.convention == "otel_genai" and call.operation == "chat"
    assert (call.input_tokens, call.output_tokens) == (10, 4)
    assert (call.status, call.error_type, call.environment, call.team) == ("error", "RateLimitError", "staging", "")


def test_openllmetry_legacy_names() -> None:
    call = normalize_call(
        span(
            {
                "llm.request.type": "chat",
                "gen_ai.system": "Anthropic",
                "gen_ai.request.model": "claude-3-5-sonnet-20241022",
                "gen_ai.response.model": "claude-3-5-sonnet-20241022",
                "gen_ai.usage.prompt_tokens": 5050,
                "gen_ai.usage.completion_tokens": 700,
                "llm.usage.total_tokens": 5750,
                "gen_ai.usage.cache_read_input_tokens": 3000,
                "gen_ai.usage.cache_creation_input_tokens": 2000,
                "traceloop.workflow.name": "support-bot",
                "traceloop.association.properties.session_id": "s-9",
                "gen_ai.completion.0.finish_reason": "end_turn",
            }
        )
    )
    assert call is not None and call.convention == "openllmetry" and call.provider == "anthropic"
    assert (call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.output_tokens) == (
        5050,
        3000,
        2000,
        700,
    )
    assert (call.agent, call.conversation_id, call.finish_reason) == ("support-bot", "s-9", "end_turn")


def test_openllmetry_embedding_and_reasoning_tokens() -> None:
    call = normalize_call(
        span(
            {
                "llm.request.type": "embedding",
                "gen_ai.system": "openai",
                "gen_ai.request.model": "text-embedding-3-small",
                "gen_ai.usage.prompt_tokens": 42,
                "gen_ai.usage.reasoning_tokens": 0,
            }
        )
    )
    assert call is not None and call.operation == "embeddings" and call.input_tokens == 42


def test_openinference_llm_span() -> None:
    call = normalize_call(
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.provider": "openai",
                "llm.system": "openai",
                "llm.model_name": "gpt-4o-2024-08-06",
                "llm.token_count.prompt": 1200,
                "llm.token_count.completion": 300,
                "llm.token_count.total": 1500,
                "llm.token_count.prompt_details.cache_read": 1000,
                "llm.token_count.completion_details.reasoning": 50,
                "agent.name": "researcher",
                "session.id": "sess-1",
                "llm.prompt_template.version": "v7",
                "llm.finish_reason": "stop",
                "llm.cost.total": "0.00475",
            }
        )
    )
    assert call is not None and call.convention == "openinference" and call.operation == "chat"
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens, call.reasoning_tokens) == (
        1200,
        300,
        1000,
        50,
    )
    assert (call.agent, call.conversation_id, call.prompt_version, call.finish_reason) == (
        "researcher",
        "sess-1",
        "v7",
        "stop",
    )
    assert call.response_model == "gpt-4o-2024-08-06" and call.reported_cost == Decimal("0.00475")


def test_anthropic_exclusive_input_is_made_inclusive() -> None:
    # An old instrumentation copying Anthropic's input_tokens (cache excluded): 50 < 3000 + 2000.
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "llm.model_name": "claude-sonnet-4-20250514",
        "llm.token_count.prompt": 50,
        "llm.token_count.completion": 700,
        "llm.token_count.prompt_details.cache_read": 3000,
        "llm.token_count.prompt_details.cache_write": 2000,
    }
    assert llm_call(span(attrs)).input_tokens == 5050
    # Not provable from the numbers, but the scope is configured as cache-exclusive.
    attrs["llm.token_count.prompt"] = 9000
    options = NormalizeOptions(cache_exclusive_input_scopes=(("legacy.anthropic", "anthropic"),))
    assert llm_call(span(attrs, scope="legacy.anthropic.v0"), options).input_tokens == 14000
    assert llm_call(span(attrs, scope="openinference.instrumentation.anthropic"), options).input_tokens == 9000


def test_missing_input_derived_from_total() -> None:
    call = llm_call(
        span(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "m",
                "llm.token_count.completion": 30,
                "llm.token_count.total": 100,
            }
        )
    )
    assert (call.input_tokens, call.output_tokens) == (70, 30)


@pytest.mark.parametrize(
    "attributes",
    [
        {"http.request.method": "GET", "url.full": "https://x"},
        {"openinference.span.kind": "CHAIN", "llm.model_name": "gpt-4o"},
        {"openinference.span.kind": "TOOL"},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a", "gen_ai.usage.input_tokens": 5},
        {"gen_ai.system": "openai"},
        {"traceloop.span.kind": "workflow", "traceloop.entity.name": "x"},
    ],
)
def test_non_llm_spans_give_none(attributes: dict) -> None:
    assert normalize_call(span(attributes)) is None


def test_precedence_openinference_over_otel_and_configurable_team() -> None:
    both = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "oi-model",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "otel-model",
        "llm.token_count.prompt": 7,
        "gen_ai.usage.input_tokens": 9,
        "app.owner": "payments",
    }
    call = llm_call(span(both))
    assert call.convention == "openinference" and call.input_tokens == 7 and call.response_model == "oi-model"
    options = NormalizeOptions(team_span_keys=("app.owner",), team_resource_keys=())
    assert llm_call(span(both), options).team == "payments"
    assert llm_call(span(both, resource={"team.name": "ml"})).team == "ml"


def test_string_and_float_values_and_provider_aliases() -> None:
    call = llm_call(
        span(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "AWS.Bedrock",
                "gen_ai.request.model": "m",
                "gen_ai.usage.input_tokens": "12",
                "gen_ai.usage.output_tokens": 3.0,
                "gen_ai.usage.cost": "not-a-number",
            }
        )
    )
    assert (call.provider, call.input_tokens, call.output_tokens, call.reported_cost) == ("aws.bedrock", 12, 3, None)
    assert normalize_provider("mistralai") == "mistral_ai" and normalize_provider("Vertex_AI") == "gcp.vertex_ai"


def test_openllmetry_propagated_workflow_name_alone_is_not_a_call() -> None:
    assert normalize_call(span({"traceloop.workflow.name": "wf", "http.request.method": "GET"})) is None


_OTEL_CALL = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
_OPENLLMETRY_CALL = {"llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}
_OPENINFERENCE_CALL = {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o"}


@pytest.mark.parametrize(
    ("call_attributes", "user_attributes", "expected"),
    [
        (_OTEL_CALL, {"user.id": "u-1"}, "u-1"),
        (_OTEL_CALL, {"enduser.id": "alice"}, "alice"),
        (_OTEL_CALL, {"enduser.pseudo.id": "QdH5CAWJgqVT4rOr0qtumf"}, "QdH5CAWJgqVT4rOr0qtumf"),
        (_OTEL_CALL, {"user.id": "u-1", "enduser.id": "alice"}, "u-1"),  # the current name first
        (_OTEL_CALL, {"enduser.id": "", "enduser.pseudo.id": "p-2"}, "p-2"),  # an empty value is absent
        (_OTEL_CALL, {"user.id": 42}, "42"),  # a scalar becomes its text
        (_OPENLLMETRY_CALL, {"traceloop.association.properties.user_id": "u-7"}, "u-7"),
        (_OPENLLMETRY_CALL, {"traceloop.association.properties.user_id": "u-7", "user.id": "u-8"}, "u-7"),
        (_OPENLLMETRY_CALL, {"enduser.id": "bob"}, "bob"),
        (_OPENINFERENCE_CALL, {"user.id": "9328ae73"}, "9328ae73"),
        (_OPENINFERENCE_CALL, {}, ""),
    ],
)
def test_user_id_per_convention(call_attributes: dict, user_attributes: dict, expected: str) -> None:
    call = llm_call(span({**call_attributes, **user_attributes}))
    assert call.user_id == expected and not call.problems


def test_user_id_on_the_resource_only_is_not_read() -> None:
    """A user is a property of a request, not of the process: only span attributes name it."""
    assert llm_call(span(_OTEL_CALL, resource={**RESOURCE, "user.id": "daemon"})).user_id == ""


@pytest.mark.parametrize("bad", ["u" * 257, ["a", "b"], b"\x00raw"])
def test_a_bad_user_id_is_left_empty_with_the_reason(bad: object) -> None:
    call = llm_call(span({**_OTEL_CALL, "user.id": bad, "gen_ai.conversation.id": "c-1"}))
    assert call.user_id == "" and call.conversation_id == "c-1"
    assert len(call.problems) == 1 and call.problems[0].startswith("user.id: ")
    assert call.problems[0].endswith("user id left empty")


def test_a_user_id_of_exactly_the_label_bound_is_kept() -> None:
    assert llm_call(span({**_OTEL_CALL, "enduser.id": "u" * 256})).user_id == "u" * 256
