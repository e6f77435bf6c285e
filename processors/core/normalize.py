"""Turn one decoded span into one `LLMCall`, whichever GenAI convention produced it.

Why a table-driven stage: the same call arrives as OTel GenAI, OpenLLMetry or
OpenInference attributes, with different names *and* different token
semantics. Each convention is a precomputed tuple of candidate attribute names
per field, looked up with `dict.get` (no scans over the attribute dict), and the
token counts are rewritten into OTel GenAI semantics:

- ``input_tokens`` includes cache reads and cache writes;
- ``output_tokens`` includes reasoning tokens.

Convention precedence when a span carries several (first match wins):

1. ``openinference`` when ``openinference.span.kind`` is present (its value
   decides whether the span is an LLM call: ``LLM`` or ``EMBEDDING``);
2. ``openllmetry`` when ``llm.request.type`` is present, or any name only
   OpenLLMetry writes (``gen_ai.usage.cache_read_input_tokens``,
   ``gen_ai.usage.cache_creation_input_tokens``, ``gen_ai.usage.reasoning_tokens``,
   ``llm.usage.total_tokens``, ``gen_ai.usage.total_tokens``, ``gen_ai.is_streaming``,
   ``traceloop.workflow.name``);
3. ``otel_genai`` when ``gen_ai.operation.name``, ``gen_ai.provider.name`` or the
   deprecated ``gen_ai.system`` is present.

Within the chosen convention every field still falls back to the other
conventions' names (e.g. an OpenLLMetry span that already uses the current
``gen_ai.usage.input_tokens``), current names before deprecated ones.

Token semantics per source (checked against the instrumentations' code): OpenLLMetry
(since traceloop/openllmetry#2175, 2024-10) and OpenInference (since
Arize-ai/openinference#1429, 2025-03) already add Anthropic's cache reads and
writes into the input count, like OTel GenAI. Older Anthropic instrumentations
copied Anthropic's `input_tokens` (cache excluded); when a span's input count
is smaller than its cache reads + writes it cannot be inclusive, so the cache
is added. `NormalizeOptions.cache_exclusive_input_scopes` forces this for
named instrumentation scopes whose counts are exclusive but not provably so.

Spans that are not LLM calls (tools, agents, workflows, HTTP, DB …) give None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from processors.core.bounds import (
    MAX_LABEL_CHARS,
    MAX_TOKENS,
    TIME_MAX_NS,
    TIME_MIN_NS,
    BadValue,
    amount,
    label,
    show,
    token_count,
)
from processors.core.records import LLMCall, SpanView

__all__ = [
    "NormalizeOptions",
    "LLM_MARKER_KEYS",
    "normalize_call",
    "normalize_provider",
    "CONVENTION_OTEL_GENAI",
    "CONVENTION_OPENLLMETRY",
    "CONVENTION_OPENINFERENCE",
    "PROMPT_NAME_KEYS",
    "PROMPT_VERSION_KEYS",
    "first_value",
]

CONVENTION_OTEL_GENAI: Final = "otel_genai"
CONVENTION_OPENLLMETRY: Final = "openllmetry"
CONVENTION_OPENINFERENCE: Final = "openinference"

_ERROR: Final = 2  # OTLP Status.StatusCode ERROR

# Prompt name / version span attributes: the conventions' own names, then our own (the default
# NormalizeOptions; evaluations.py reads a non-call span's prompt with them).
PROMPT_NAME_KEYS: Final = (
    "gen_ai.prompt.name",
    "llm.prompt_template.name",
    "traceloop.prompt.key",
    "llmops.prompt.name",
)
PROMPT_VERSION_KEYS: Final = (
    "gen_ai.prompt.version",
    "llm.prompt_template.version",
    "traceloop.prompt.version",
    "llmops.prompt.version",
)


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """Which attributes feed the configurable attribution dimensions.

    Span attributes are tried before resource attributes; the first non-empty
    value wins.
    """

    # Team: set on the resource by most deployments (the loadgen sets `team`).
    team_span_keys: tuple[str, ...] = ("llmops.team", "team")
    team_resource_keys: tuple[str, ...] = ("team", "team.name", "llmops.team")
    # Prompt name / version: the conventions' own names, then our own.
    prompt_name_span_keys: tuple[str, ...] = PROMPT_NAME_KEYS
    prompt_name_resource_keys: tuple[str, ...] = ()
    prompt_version_span_keys: tuple[str, ...] = PROMPT_VERSION_KEYS
    prompt_version_resource_keys: tuple[str, ...] = ("llmops.prompt.version",)
    # OTel GenAI operations that are model calls (agent/tool spans would double count tokens).
    llm_operations: frozenset[str] = frozenset(
        {"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding", "rerank"}
    )
    # OpenInference span kinds that are model calls.
    openinference_kinds: frozenset[str] = frozenset({"LLM", "EMBEDDING"})
    # Providers whose raw `input_tokens` exclude cache reads/writes (Anthropic's API), when the
    # instrumentation copies them verbatim: (instrumentation scope name prefix, provider).
    # Empty scope prefix means "any scope". See `_input_excludes_cache`.
    cache_exclusive_input_scopes: tuple[tuple[str, str], ...] = ()


_DEFAULT_OPTIONS: Final = NormalizeOptions()

# Provider spellings seen in the field -> OTel GenAI `gen_ai.provider.name` well-known values.
_PROVIDER_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "openai": "openai",
        "anthropic": "anthropic",
        "aws.bedrock": "aws.bedrock",
        "bedrock": "aws.bedrock",
        "aws": "aws.bedrock",
        "amazon_bedrock": "aws.bedrock",
        "azure.ai.openai": "azure.ai.openai",
        "azure": "azure.ai.openai",
        "azure_openai": "azure.ai.openai",
        "azureopenai": "azure.ai.openai",
        "az.ai.openai": "azure.ai.openai",
        "azure.ai.inference": "azure.ai.inference",
        "az.ai.inference": "azure.ai.inference",
        "gcp.vertex_ai": "gcp.vertex_ai",
        "vertex_ai": "gcp.vertex_ai",
        "vertexai": "gcp.vertex_ai",
        "vertex": "gcp.vertex_ai",
        "gcp.gemini": "gcp.gemini",
        "gemini": "gcp.gemini",
        "google": "gcp.gemini",
        "google_genai": "gcp.gemini",
        "gcp.gen_ai": "gcp.gen_ai",
        "mistral_ai": "mistral_ai",
        "mistralai": "mistral_ai",
        "mistral": "mistral_ai",
        "cohere": "cohere",
        "deepseek": "deepseek",
        "x_ai": "x_ai",
        "xai": "x_ai",
        "groq": "groq",
        "perplexity": "perplexity",
        "ibm.watsonx.ai": "ibm.watsonx.ai",
        "watsonx": "ibm.watsonx.ai",
        "ollama": "ollama",
        "together": "together",
        "together_ai": "together",
        "fireworks": "fireworks",
        "openrouter": "openrouter",
    }
)


def normalize_provider(raw: str) -> str:
    """Canonical provider name (OTel GenAI values), unknown names lower-cased as-is."""
    low = raw.strip().lower()
    return _PROVIDER_ALIASES.get(low, low)


@dataclass(frozen=True, slots=True)
class _Keys:
    """Candidate attribute names per field for one convention, in precedence order."""

    provider: tuple[str, ...]
    operation: tuple[str, ...]
    request_model: tuple[str, ...]
    response_model: tuple[str, ...]
    input_tokens: tuple[str, ...]
    output_tokens: tuple[str, ...]
    total_tokens: tuple[str, ...]
    cache_read: tuple[str, ...]
    cache_write: tuple[str, ...]
    reasoning: tuple[str, ...]
    finish_reasons: tuple[str, ...]
    agent: tuple[str, ...]
    conversation: tuple[str, ...]
    user: tuple[str, ...]
    reported_cost: tuple[str, ...]

    def ordered(self) -> tuple[tuple[str, ...], ...]:
        """All candidate tuples in `_FIELDS` order, for one pass of lookups per span."""
        return tuple(getattr(self, name) for name in _FIELDS)


_FIELDS: Final = (
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read",
    "cache_write",
    "reasoning",
    "finish_reasons",
    "agent",
    "conversation",
    "user",
    "reported_cost",
)


# Positions of the token counts in `_FIELDS`, in the order normalize_call reads them.
_TOKEN_INDEXES: Final = tuple(
    _FIELDS.index(name)
    for name in ("input_tokens", "output_tokens", "total_tokens", "cache_read", "cache_write", "reasoning")
)

# The end user a call was made for. OTel: `user.id` (user registry) and `enduser.id` (enduser registry;
# deprecated in semconv 1.27 for `user.id`, listed again since), then the pseudonymous `enduser.pseudo.id`;
# the GenAI conventions define no user attribute of their own. OpenInference: `user.id`. OpenLLMetry:
# the association property `user_id` (`Traceloop.set_association_properties({"user_id": ...})`).
_OPENLLMETRY_USER: Final = "traceloop.association.properties.user_id"
_USER_KEYS: Final = ("user.id", "enduser.id", "enduser.pseudo.id", _OPENLLMETRY_USER)

_COST_KEYS: Final = ("gen_ai.usage.cost", "llm.cost.total", "gen_ai.usage.cost_usd", "llm.usage.cost")

_OTEL_KEYS: Final = _Keys(
    provider=("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    operation=("gen_ai.operation.name", "llm.request.type"),
    request_model=("gen_ai.request.model", "llm.request.model"),
    response_model=("gen_ai.response.model", "llm.response.model"),
    input_tokens=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    output_tokens=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    total_tokens=("gen_ai.usage.total_tokens", "llm.usage.total_tokens"),
    cache_read=("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    cache_write=("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    reasoning=("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens"),
    finish_reasons=("gen_ai.response.finish_reasons", "gen_ai.response.finish_reason"),
    agent=("gen_ai.agent.name", "agent.name"),
    conversation=("gen_ai.conversation.id", "session.id"),
    user=_USER_KEYS,
    reported_cost=_COST_KEYS,
)

_OPENLLMETRY_KEYS: Final = _Keys(
    provider=("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    operation=("gen_ai.operation.name", "llm.request.type"),
    request_model=("gen_ai.request.model", "llm.request.model"),
    response_model=("gen_ai.response.model", "llm.response.model"),
    input_tokens=("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens"),
    output_tokens=("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens"),
    total_tokens=("llm.usage.total_tokens", "gen_ai.usage.total_tokens"),
    cache_read=("gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.cache_read.input_tokens"),
    cache_write=("gen_ai.usage.cache_creation_input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
    reasoning=("gen_ai.usage.reasoning_tokens", "gen_ai.usage.reasoning.output_tokens", "llm.usage.reasoning_tokens"),
    finish_reasons=(
        "gen_ai.response.finish_reasons",
        "gen_ai.response.finish_reason",
        "gen_ai.completion.0.finish_reason",
        "llm.response.finish_reason",
    ),
    agent=("gen_ai.agent.name", "traceloop.agent.name", "traceloop.entity.name", "traceloop.workflow.name"),
    conversation=("gen_ai.conversation.id", "traceloop.association.properties.session_id", "session.id"),
    user=(_OPENLLMETRY_USER, *_USER_KEYS),
    reported_cost=_COST_KEYS,
)

_OPENINFERENCE_KEYS: Final = _Keys(
    provider=("llm.provider", "llm.system", "gen_ai.provider.name", "gen_ai.system"),
    operation=("gen_ai.operation.name",),
    request_model=("llm.request.model_name", "gen_ai.request.model", "llm.model_name"),
    response_model=("llm.response.model_name", "llm.model_name", "gen_ai.response.model", "embedding.model_name"),
    input_tokens=("llm.token_count.prompt", "gen_ai.usage.input_tokens"),
    output_tokens=("llm.token_count.completion", "gen_ai.usage.output_tokens"),
    total_tokens=("llm.token_count.total",),
    cache_read=("llm.token_count.prompt_details.cache_read", "gen_ai.usage.cache_read.input_tokens"),
    cache_write=("llm.token_count.prompt_details.cache_write", "gen_ai.usage.cache_creation.input_tokens"),
    reasoning=("llm.token_count.completion_details.reasoning", "gen_ai.usage.reasoning.output_tokens"),
    finish_reasons=("llm.finish_reason", "gen_ai.response.finish_reasons"),
    agent=("agent.name", "gen_ai.agent.name", "graph.node.name"),
    conversation=("session.id", "gen_ai.conversation.id"),
    user=_USER_KEYS,
    reported_cost=("llm.cost.total", "gen_ai.usage.cost"),
)

_ORDERED: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = MappingProxyType(
    {
        CONVENTION_OTEL_GENAI: _OTEL_KEYS.ordered(),
        CONVENTION_OPENLLMETRY: _OPENLLMETRY_KEYS.ordered(),
        CONVENTION_OPENINFERENCE: _OPENINFERENCE_KEYS.ordered(),
    }
)

_OPENLLMETRY_MARKERS: Final = (
    "llm.request.type",
    "llm.usage.total_tokens",
    "gen_ai.usage.total_tokens",
    "gen_ai.is_streaming",
    "traceloop.workflow.name",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.reasoning_tokens",
)
_OTEL_MARKERS: Final = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system")
# A span without any of these attribute keys is never an LLM call (`_detect` needs one):
# the decode stage builds SpanViews only for spans that carry one.
LLM_MARKER_KEYS: Final = frozenset(("openinference.span.kind", *_OPENLLMETRY_MARKERS, *_OTEL_MARKERS))
_OPENINFERENCE_OPERATION: Final[Mapping[str, str]] = MappingProxyType({"LLM": "chat", "EMBEDDING": "embeddings"})
# OpenLLMetry's `llm.request.type` values -> OTel GenAI operation names.
_OPENLLMETRY_OPERATION: Final[Mapping[str, str]] = MappingProxyType(
    {"chat": "chat", "completion": "text_completion", "embedding": "embeddings", "rerank": "rerank"}
)


def first_value(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """First present, non-empty value among `keys`, else None."""
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _lookup_all(attrs: Mapping[str, Any], ordered: tuple[tuple[str, ...], ...]) -> list[Any]:
    """`first_value` for every field in one call (per-span Python call overhead is the cost)."""
    get = attrs.get
    out: list[Any] = []
    append = out.append
    for keys in ordered:
        found = None
        for key in keys:
            value = get(key)
            if value is not None and value != "":
                found = value
                break
        append(found)
    return out


def _label(
    value: Any, what: str, problems: list[str], attrs: Mapping[str, Any] | None = None, keys: tuple[str, ...] = ()
) -> str:
    """A dimension's text; a value that is no name or too long leaves it empty, with the reason
    (naming the attribute among `keys` of `attrs` that supplied it, when given)."""
    if value is None:
        return ""
    if type(value) is str and len(value) <= MAX_LABEL_CHARS:
        return value
    try:
        return label(value, what)
    except BadValue as exc:
        source = f"{_source(attrs, keys)}: " if attrs is not None and keys else ""
        problems.append(f"{source}{exc}: {what} left empty")
        return ""


def _first_str(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """Text of the first present value among `keys` (detection only: compared, never stored)."""
    value = first_value(attrs, keys)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)[: MAX_LABEL_CHARS + 1]


def _tokens(value: Any) -> int:
    """Token count from an attribute value (0 when absent); a bad one rejects the call (`BadValue`)."""
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    return token_count(value)


def _valid_tokens(value: Any) -> bool:
    try:
        _tokens(value)
    except BadValue:
        return False
    return True


def _cost(value: Any, key: str, problems: list[str]) -> Decimal | None:
    """Provider-reported cost, exact; a bad one leaves it NULL, with the reason."""
    if value is None:
        return None
    try:
        return amount(value)
    except BadValue as exc:
        problems.append(f"{key}: {exc}: reported_cost left NULL")
        return None


def _finish_reason(value: Any, problems: list[str], attrs: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return _label(value, "finish reason", problems, attrs, keys)


def _detect(attrs: Mapping[str, Any], options: NormalizeOptions) -> tuple[str, _Keys, str] | None:
    """(convention, key table, operation) for an LLM-call span, None for anything else."""
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        kind_s = str(kind).upper()
        if kind_s not in options.openinference_kinds:
            return None
        operation = _first_str(attrs, _OPENINFERENCE_KEYS.operation) or _OPENINFERENCE_OPERATION.get(kind_s, "chat")
        return CONVENTION_OPENINFERENCE, _OPENINFERENCE_KEYS, operation
    if "traceloop.span.kind" in attrs:
        return None  # OpenLLMetry workflow/task/agent/tool span: its LLM calls are child spans
    for marker in _OPENLLMETRY_MARKERS:
        if marker in attrs:
            if (
                "gen_ai.request.model" not in attrs
                and "gen_ai.response.model" not in attrs
                and "llm.request.type" not in attrs
                and "gen_ai.operation.name" not in attrs
            ):
                return None  # propagated association properties only, no model call
            operation = _first_str(attrs, ("gen_ai.operation.name",))
            if not operation:
                request_type = _first_str(attrs, ("llm.request.type",))
                operation = _OPENLLMETRY_OPERATION.get(request_type, request_type)
            if operation and operation not in options.llm_operations:
                return None
            return CONVENTION_OPENLLMETRY, _OPENLLMETRY_KEYS, operation or "chat"
    for marker in _OTEL_MARKERS:
        if marker in attrs:
            operation = _first_str(attrs, ("gen_ai.operation.name",))
            if operation:
                if operation not in options.llm_operations:
                    return None
            elif "gen_ai.request.model" not in attrs and "gen_ai.response.model" not in attrs:
                return None  # a bare `gen_ai.system` without a model is not a model call
            return CONVENTION_OTEL_GENAI, _OTEL_KEYS, operation or "chat"
    return None


def _input_excludes_cache(span: SpanView, provider: str, options: NormalizeOptions) -> bool:
    """Whether this span's input token count follows Anthropic's API (cache tokens excluded)."""
    for scope_prefix, scope_provider in options.cache_exclusive_input_scopes:
        if scope_provider == provider and span.scope_name.startswith(scope_prefix):
            return True
    return False


def _dimension(
    attrs: Mapping[str, Any],
    resource: Mapping[str, Any],
    span_keys: tuple[str, ...],
    resource_keys: tuple[str, ...],
    what: str,
    problems: list[str],
) -> str:
    value = _label(first_value(attrs, span_keys), what, problems, attrs, span_keys) if span_keys else ""
    if not value and resource_keys:
        value = _label(first_value(resource, resource_keys), what, problems, resource, resource_keys)
    return value


def _source(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """The attribute that supplied a field (named in error reasons only)."""
    return next((key for key in keys if attrs.get(key) not in (None, "")), keys[0])


def normalize_call(span: SpanView, options: NormalizeOptions | None = None) -> LLMCall | None:
    """One `LLMCall` (tokens in OTel GenAI semantics, cost unset) for an LLM span, else None.

    Values are read through `processors.core.bounds`. A bad token count or a start/end time
    outside the event-time window raises `BadValue` (the call cannot be priced or windowed
    honestly: the caller records it in ingest_errors instead of llm_calls). A bad name or
    reported cost leaves that field empty/NULL and is listed in `LLMCall.problems`.
    """
    opts = options if options is not None else _DEFAULT_OPTIONS
    attrs = span.attributes
    detected = _detect(attrs, opts)
    if detected is None:
        return None
    convention, keys, operation = detected
    if not TIME_MIN_NS <= span.start_ns < TIME_MAX_NS:
        raise BadValue(f"start_time_unix_nano {show(span.start_ns)} outside 2000-01-01..2200-01-01")
    if span.end_ns and not TIME_MIN_NS <= span.end_ns < TIME_MAX_NS:
        raise BadValue(f"end_time_unix_nano {show(span.end_ns)} outside 2000-01-01..2200-01-01")
    resource = span.resource
    ordered = _ORDERED[convention]
    values = _lookup_all(attrs, ordered)
    (
        provider_raw,
        request_model,
        response_model,
        input_raw,
        output_raw,
        total_raw,
        cache_read_raw,
        cache_write_raw,
        reasoning_raw,
        finish_raw,
        agent,
        conversation,
        user,
        cost_raw,
    ) = values
    problems: list[str] = []
    provider_text = _label(provider_raw, "provider", problems, attrs, keys.provider)
    provider = normalize_provider(provider_text) if isinstance(provider_raw, str) else ""

    token_values = (input_raw, output_raw, total_raw, cache_read_raw, cache_write_raw, reasoning_raw)
    try:
        input_tokens, output_tokens, total, cache_read, cache_write, reasoning = map(_tokens, token_values)
    except BadValue as exc:
        first_bad = next(i for i, value in zip(_TOKEN_INDEXES, token_values, strict=True) if not _valid_tokens(value))
        raise BadValue(f"{_source(attrs, ordered[first_bad])}: {exc}") from None
    if input_raw is None and output_raw is not None:
        if total > output_tokens:
            input_tokens = total - output_tokens
    elif output_raw is None and input_raw is not None and total > input_tokens:
        output_tokens = total - input_tokens
    if (cache_read or cache_write) and (
        _input_excludes_cache(span, provider, opts) or input_tokens < cache_read + cache_write
    ):
        # Anthropic-style count (cache excluded): an inclusive count can never be smaller.
        input_tokens += cache_read + cache_write
    if reasoning > output_tokens:
        output_tokens += reasoning  # reasoning reported apart from output: fold it in

    status_error = span.status_code == _ERROR
    error_type = (
        _label(first_value(attrs, ("error.type",)), "error type", problems, attrs, ("error.type",))
        if status_error
        else ""
    )
    if status_error and not error_type:
        error_type = "_OTHER"

    environment = resource.get("deployment.environment.name") or resource.get("deployment.environment") or ""
    service = resource.get("service.name") or ""
    # Names: the common case (a short string) is checked inline, anything else through `_label`.

    call = LLMCall(
        ts_ns=span.start_ns,
        trace_id=span.trace_id,
        span_id=span.span_id,
        service=(
            service
            if type(service) is str and len(service) <= MAX_LABEL_CHARS
            else _label(service, "service", problems, resource, ("service.name",))
        ),
        environment=(
            environment
            if type(environment) is str and len(environment) <= MAX_LABEL_CHARS
            else _label(
                environment,
                "environment",
                problems,
                resource,
                ("deployment.environment.name", "deployment.environment"),
            )
        ),
        team=_dimension(attrs, resource, opts.team_span_keys, opts.team_resource_keys, "team", problems),
        provider=provider,
        request_model=(
            request_model
            if type(request_model) is str and len(request_model) <= MAX_LABEL_CHARS
            else _label(request_model, "request model", problems, attrs, keys.request_model)
        ),
        response_model=(
            response_model
            if type(response_model) is str and len(response_model) <= MAX_LABEL_CHARS
            else _label(response_model, "response model", problems, attrs, keys.response_model)
        ),
        operation=_label(operation, "operation", problems, attrs, keys.operation),
        prompt_name=_dimension(
            attrs, resource, opts.prompt_name_span_keys, opts.prompt_name_resource_keys, "prompt name", problems
        ),
        prompt_version=_dimension(
            attrs,
            resource,
            opts.prompt_version_span_keys,
            opts.prompt_version_resource_keys,
            "prompt version",
            problems,
        ),
        agent=(
            agent
            if type(agent) is str and len(agent) <= MAX_LABEL_CHARS
            else _label(agent, "agent", problems, attrs, keys.agent)
        ),
        conversation_id=(
            conversation
            if type(conversation) is str and len(conversation) <= MAX_LABEL_CHARS
            else _label(conversation, "conversation id", problems, attrs, keys.conversation)
        ),
        user_id=(
            user
            if type(user) is str and len(user) <= MAX_LABEL_CHARS
            else _label(user, "user id", problems, attrs, keys.user)
        ),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        reported_cost=_cost(cost_raw, _source(attrs, keys.reported_cost), problems) if cost_raw is not None else None,
        duration_ms=(span.end_ns - span.start_ns) / 1e6 if span.end_ns >= span.start_ns else 0.0,
        status="error" if status_error else "ok",
        error_type=error_type,
        finish_reason=_finish_reason(finish_raw, problems, attrs, keys.finish_reasons),
        convention=convention,
    )
    if problems:
        call.problems = problems
    return call
