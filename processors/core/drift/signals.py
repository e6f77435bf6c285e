"""Per-call drift signals read from span attributes, whichever GenAI convention produced them.

Why its own module: drift needs the answer itself (length, refusal, a cheap embedding) and
what a span carries about retrieval and embeddings, which `LLMCall` deliberately leaves out.
Token counts and TTFT come from `LLMCall`; everything here comes from ``SpanView.attributes``.

Where the answer text is read, first found wins:

1. OTel GenAI ``gen_ai.output.messages``: a JSON string (or an already decoded list) of
   ``{"role", "parts": [{"type": "text", "content": ...}, ...], "finish_reason"}`` messages
   (semantic-conventions docs/gen-ai/gen-ai-output-messages.json); text parts are joined.
2. OpenInference ``llm.output_messages.N.message.content``, then ``output.value``.
3. OpenLLMetry (legacy) ``gen_ai.completion.N.content``.

Finish reason: the output message's ``finish_reason``, ``gen_ai.response.finish_reasons``,
``gen_ai.completion.0.finish_reason``, ``llm.finish_reason``; provider spellings are mapped to the
OTel values (stop, length, content_filter, tool_call, error) so drift is comparable across providers.

Embeddings carried by spans: OpenInference ``embedding.embeddings.N.embedding.vector`` (the
first one) with ``embedding.model_name``, plus configurable attribute names. Retrieval:
``retrieval.documents.N.document.score`` (OpenInference), the number of documents, and an
empty-retrieval flag on retriever spans.

The answer embedding is signed feature hashing of word unigrams and bigrams into ``dim``
buckets (CRC-32 mixed by MurmurHash3's 64-bit finaliser: stable across processes, unlike the
salted built-in ``hash``, and ~7x cheaper than a cryptographic hash),
L2-normalised: cheap, deterministic and model-free; it moves when vocabulary and phrasing move.
"""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from processors.core.bounds import MAX_JSON_CHARS, MAX_VECTOR_LEN, BadValue, label, number

__all__ = [
    "DEFAULT_REFUSAL_PATTERNS",
    "SignalOptions",
    "CallSignals",
    "output_text",
    "finish_reason",
    "is_refusal",
    "hashing_embedding",
    "span_embedding",
    "extract_signals",
]

DEFAULT_REFUSAL_PATTERNS: Final[tuple[str, ...]] = (
    (
        r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I "
        r"(?:can't|cannot|can not|won't|will not|am unable|'m unable|am not able|'m not able)"
    ),
    (
        r"\bI (?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to) "
        r"(?:help|assist|comply|provide|do that|fulfil|fulfill|answer|share|support|engage)"
    ),
    r"\bI must (?:decline|refuse)\b",
    r"\bas an AI(?: language model)?\b",
    r"\bI'm not (?:allowed|permitted) to\b",
    r"\b(?:goes against|violates) (?:my|our|the) (?:guidelines|policies|policy|usage policies)\b",
)

# Provider spellings -> OTel GenAI finish reasons (gen_ai.response.finish_reasons well-known values).
_FINISH_REASONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "stop": "stop",
        "end_turn": "stop",
        "stop_sequence": "stop",
        "eos": "stop",
        "complete": "stop",
        "finish_reason_stop": "stop",
        "length": "length",
        "max_tokens": "length",
        "max_output_tokens": "length",
        "model_length": "length",
        "content_filter": "content_filter",
        "safety": "content_filter",
        "recitation": "content_filter",
        "blocklist": "content_filter",
        "prohibited_content": "content_filter",
        "refusal": "content_filter",
        "tool_call": "tool_call",
        "tool_calls": "tool_call",
        "tool_use": "tool_call",
        "function_call": "tool_call",
        "error": "error",
    }
)

_MAX_INDEXED: Final = 1024  # bound on probing indexed attributes (N in "...N.content")
_MAX_SCORE: Final = 1e12  # retrieval scores (cosine, dot product, BM25) are far smaller
_WORD: Final = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class SignalOptions:
    """What counts as a refusal and where embeddings are read; defaults fit the three conventions."""

    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSAL_PATTERNS  # regexes, case-insensitive
    refusal_scan_chars: int = 600  # refusals say so up front; scanning a prefix bounds the cost
    embedding_dim: int = 384  # dimension of the hashing answer embedding
    embedding_max_chars: int = 20_000  # text beyond this is not hashed
    embedding_vector_keys: tuple[str, ...] = ()  # extra span attributes holding a vector (list of floats or JSON)
    embedding_model_keys: tuple[str, ...] = ("embedding.model_name",)

    def __post_init__(self) -> None:
        if self.embedding_dim < 2 or self.refusal_scan_chars < 1 or self.embedding_max_chars < 1:
            raise ValueError("embedding_dim >= 2, refusal_scan_chars >= 1 and embedding_max_chars >= 1 are required")
        for pattern in self.refusal_patterns:
            re.compile(pattern)  # fail fast at start-up on a bad pattern

    @property
    def refusal_regex(self) -> re.Pattern[str] | None:
        """All refusal patterns as one compiled alternation (re caches the compilation)."""
        if not self.refusal_patterns:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.refusal_patterns), re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CallSignals:
    """The drift signals of one call; None where the span does not carry the information."""

    answer_length: int | None  # characters of the answer text
    refusal: bool | None
    finish_reason: str  # OTel value, or the raw lower-case value when unknown; "" when absent
    answer_embedding: NDArray[np.float32] | None
    span_embedding: NDArray[np.float32] | None  # vector carried by the span (e.g. the query embedding)
    embedding_model: str
    retrieval_documents: int | None  # None: no retrieval on this span
    retrieval_empty: bool | None
    retrieval_score_mean: float | None
    retrieval_score_max: float | None


def _json_value(value: Any) -> Any:
    """A JSON attribute decoded; None when too long (`MAX_JSON_CHARS`), too deep or not JSON."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) > MAX_JSON_CHARS:
            return None
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if len(value) > MAX_JSON_CHARS:
            return None
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _otel_messages(attrs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = _json_value(attrs.get("gen_ai.output.messages"))
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, Mapping)]


def _indexed(attrs: Mapping[str, Any], prefix: str, suffix: str) -> list[Any]:
    """Values of ``prefix.N.suffix`` for N = 0, 1, ... until the first missing index."""
    values: list[Any] = []
    for i in range(_MAX_INDEXED):
        value = attrs.get(f"{prefix}.{i}.{suffix}")
        if value is None:
            break
        values.append(value)
    return values


def output_text(attrs: Mapping[str, Any]) -> str | None:
    """The answer text of an LLM span (see module docstring for precedence); None when not captured."""
    messages = _otel_messages(attrs)
    if messages:
        texts = [
            part["content"]
            for message in messages
            for part in (message.get("parts") or [])
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("content"), str)
        ]
        if texts:
            return "\n".join(texts)
    contents = [v for v in _indexed(attrs, "llm.output_messages", "message.content") if isinstance(v, str)]
    if contents:
        return "\n".join(contents)
    value = attrs.get("output.value")
    if isinstance(value, str):
        return value
    legacy = [v for v in _indexed(attrs, "gen_ai.completion", "content") if isinstance(v, str)]
    if legacy:
        return "\n".join(legacy)
    return None


def _normalize_finish(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    if value is None:
        return ""
    try:
        raw = label(value, "finish reason").strip().lower()
    except BadValue:
        return ""  # not a name: the signal is absent
    return _FINISH_REASONS.get(raw, raw)


def finish_reason(attrs: Mapping[str, Any]) -> str:
    """Finish reason of the (first) choice, mapped to OTel values; "" when absent."""
    for message in _otel_messages(attrs):
        reason = _normalize_finish(message.get("finish_reason"))
        if reason:
            return reason
    for key in (
        "gen_ai.response.finish_reasons",
        "gen_ai.response.finish_reason",
        "gen_ai.completion.0.finish_reason",
        "llm.finish_reason",
    ):
        reason = _normalize_finish(attrs.get(key))
        if reason:
            return reason
    return ""


def is_refusal(text: str, options: SignalOptions | None = None) -> bool:
    """Whether the answer's opening matches a refusal pattern."""
    opts = options or _DEFAULT_OPTIONS
    regex = opts.refusal_regex
    if regex is None:
        return False
    return regex.search(text[: opts.refusal_scan_chars].replace("\u2019", "'")) is not None


def hashing_embedding(text: str, dim: int = 384, max_chars: int = 20_000) -> NDArray[np.float32]:
    """Signed feature hashing of lower-cased word unigrams and bigrams, L2-normalised (float32).

    Feature ``f`` goes to bucket ``h mod dim`` with sign ``+1`` or ``-1`` from bit 63 of
    ``h = fmix64(crc32(f))`` (UTF-8): identical text gives identical vectors in every process.
    Text without words gives the zero vector.
    """
    words = _WORD.findall(text[:max_chars].lower())
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    if not features:
        return np.zeros(dim, dtype=np.float32)
    hashes = _fmix64(
        np.fromiter((zlib.crc32(f.encode("utf-8")) for f in features), dtype=np.uint64, count=len(features))
    )
    buckets = (hashes % np.uint64(dim)).astype(np.int64)
    signs = np.where((hashes >> np.uint64(63)) == 0, 1.0, -1.0)
    vector = np.bincount(buckets, weights=signs, minlength=dim)
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0.0 else vector).astype(np.float32)


def _fmix64(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """MurmurHash3's 64-bit finaliser: spreads CRC-32's linear structure over all 64 bits."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _vector(value: Any) -> NDArray[np.float32] | None:
    """A flat vector of 1..`MAX_VECTOR_LEN` finite numbers (float32), else None."""
    value = _json_value(value)
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_VECTOR_LEN:
        return None
    if not all(type(item) is float or type(item) is int for item in value):
        return None
    try:
        vector = np.asarray(value, dtype=np.float64).astype(np.float32)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float64
        return None
    if not bool(np.all(np.isfinite(vector))):
        return None
    return vector


def _name(value: Any) -> str:
    try:
        return label(value, "name")
    except BadValue:
        return ""


def span_embedding(
    attrs: Mapping[str, Any], options: SignalOptions | None = None
) -> tuple[NDArray[np.float32] | None, str]:
    """(first embedding vector carried by the span, embedding model name)."""
    opts = options or _DEFAULT_OPTIONS
    model = next((_name(attrs[k]) for k in opts.embedding_model_keys if attrs.get(k) not in (None, "")), "")
    for key in ("embedding.embeddings.0.embedding.vector", *opts.embedding_vector_keys):
        vector = _vector(attrs.get(key))
        if vector is not None:
            return vector, model
    return None, model


def _retrieval(attrs: Mapping[str, Any]) -> tuple[int | None, bool | None, float | None, float | None]:
    count = 0
    scores: list[float] = []
    for i in range(_MAX_INDEXED):
        prefix = f"retrieval.documents.{i}.document."
        score = attrs.get(prefix + "score")
        if (
            score is None
            and attrs.get(prefix + "id") is None
            and attrs.get(prefix + "content") is None
            and attrs.get(prefix + "metadata") is None
        ):
            break
        count += 1
        if type(score) is float or type(score) is int:
            try:
                scores.append(number(score, -_MAX_SCORE, _MAX_SCORE, "retrieval score"))
            except BadValue:
                pass  # not finite or absurd: this document has no score
    kind = attrs.get("openinference.span.kind")
    is_retriever = isinstance(kind, str) and kind.upper() == "RETRIEVER"
    if count == 0 and not is_retriever:
        return None, None, None, None
    if not scores:
        return count, count == 0, None, None
    return count, count == 0, float(np.mean(scores)), float(np.max(scores))


def extract_signals(attrs: Mapping[str, Any], options: SignalOptions | None = None) -> CallSignals:
    """All drift signals of one span. Computes the hashing embedding: call it for sampled calls only."""
    opts = options or _DEFAULT_OPTIONS
    text = output_text(attrs)
    reason = finish_reason(attrs)
    refusal: bool | None = None
    embedding: NDArray[np.float32] | None = None
    if text is not None:
        refusal = reason == "content_filter" or is_refusal(text, opts)
        embedding = hashing_embedding(text, opts.embedding_dim, opts.embedding_max_chars)
    elif reason == "content_filter":
        refusal = True
    vector, model = span_embedding(attrs, opts)
    documents, empty, score_mean, score_max = _retrieval(attrs)
    return CallSignals(
        answer_length=len(text) if text is not None else None,
        refusal=refusal,
        finish_reason=reason,
        answer_embedding=embedding,
        span_embedding=vector,
        embedding_model=model,
        retrieval_documents=documents,
        retrieval_empty=empty,
        retrieval_score_mean=score_mean,
        retrieval_score_max=score_max,
    )


_DEFAULT_OPTIONS: Final = SignalOptions()
