"""Per-call drift signals from span attributes of each convention."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

from processors.core.drift import SignalOptions, extract_signals, hashing_embedding, output_text
from processors.core.drift.signals import finish_reason, is_refusal, span_embedding

OTEL_MESSAGES = json.dumps(
    [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Paris is the capital."},
                {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"q": "x"}},
                {"type": "text", "content": "Anything else?"},
            ],
            "finish_reason": "stop",
        }
    ]
)


def test_otel_genai_output_messages() -> None:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.output.messages": OTEL_MESSAGES}
    text = "Paris is the capital.\nAnything else?"
    assert output_text(attrs) == text
    signals = extract_signals(attrs)
    assert signals.answer_length == len(text)
    assert signals.finish_reason == "stop"
    assert signals.refusal is False
    assert signals.retrieval_documents is None and signals.span_embedding is None


def test_otel_messages_already_decoded_and_max_tokens_mapping() -> None:
    attrs = {
        "gen_ai.output.messages": [
            {"role": "assistant", "parts": [{"type": "text", "content": "abc"}], "finish_reason": "max_tokens"}
        ]
    }
    assert output_text(attrs) == "abc"
    assert finish_reason(attrs) == "length"


def test_openinference_output_value_and_messages() -> None:
    attrs = {"openinference.span.kind": "LLM", "output.value": "Hello there", "llm.finish_reason": "end_turn"}
    assert output_text(attrs) == "Hello there"
    assert finish_reason(attrs) == "stop"
    with_messages = {
        **attrs,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Hi",
    }
    assert output_text(with_messages) == "Hi"


def test_openllmetry_legacy_completions() -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "first",
        "gen_ai.completion.0.finish_reason": "length",
        "gen_ai.completion.1.content": "second",
    }
    assert output_text(attrs) == "first\nsecond"
    signals = extract_signals(attrs)
    assert signals.finish_reason == "length" and signals.answer_length == len("first\nsecond")


def test_finish_reasons_list_attribute() -> None:
    assert finish_reason({"gen_ai.response.finish_reasons": ["tool_calls"]}) == "tool_call"
    assert finish_reason({"gen_ai.response.finish_reasons": ("SAFETY",)}) == "content_filter"
    assert finish_reason({"gen_ai.response.finish_reasons": ["something_new"]}) == "something_new"
    assert finish_reason({}) == ""


def test_no_text_captured() -> None:
    signals = extract_signals({"gen_ai.operation.name": "chat"})
    assert signals.answer_length is None and signals.refusal is None and signals.answer_embedding is None
    # a content filter stop is a refusal even without the text
    assert extract_signals({"gen_ai.response.finish_reasons": ["content_filter"]}).refusal is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't help with that request.", True),
        ("I\u2019m sorry, but I cannot assist with this.", True),
        ("I cannot provide medical dosage advice.", True),
        ("As an AI language model, I don't have opinions.", True),
        ("I must decline to answer.", True),
        ("Sorry for the delay! Here is the summary you asked for.", False),
        ("The API cannot help you if the token is expired; refresh it first.", False),
        ("Paris is the capital of France.", False),
    ],
)
def test_default_refusal_patterns(text: str, expected: bool) -> None:
    assert is_refusal(text) is expected


def test_configurable_refusal_patterns() -> None:
    options = SignalOptions(refusal_patterns=(r"\bdésolé\b",))
    assert is_refusal("Désolé, je ne peux pas.", options)
    assert not is_refusal("I'm sorry, but I can't help with that.", options)
    assert not is_refusal("I'm sorry, but I can't help with that.", SignalOptions(refusal_patterns=()))
    # only the opening is scanned
    late = "x " * 400 + "I cannot help with that."
    assert not is_refusal(late, SignalOptions(refusal_scan_chars=100))
    with pytest.raises(re.error, match="missing"):
        SignalOptions(refusal_patterns=("(",))


def _hashed_by_hand(text: str, dim: int) -> np.ndarray:
    words = text.lower().split()
    features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    vector = np.zeros(dim)
    mask = (1 << 64) - 1
    for f in features:
        h = zlib.crc32(f.encode())  # then MurmurHash3's fmix64, in plain integers
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & mask
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & mask
        h ^= h >> 33
        vector[h % dim] += 1.0 if h >> 63 == 0 else -1.0
    return vector / np.linalg.norm(vector)


def test_hashing_embedding_matches_hand_computation() -> None:
    text = "the cat sat on the mat the cat"
    got = hashing_embedding(text, dim=64)
    assert got.dtype == np.float32 and got.shape == (64,)
    np.testing.assert_allclose(got, _hashed_by_hand(text, 64), rtol=1e-6, atol=1e-7)
    assert float(np.linalg.norm(got)) == pytest.approx(1.0, rel=1e-6)
    assert not np.any(hashing_embedding("   ...  ", dim=16))


def test_hashing_embedding_is_stable_across_processes() -> None:
    # Python's own hash() is salted per process; ours must not be.
    code = (
        "from processors.core.drift import hashing_embedding; "
        "print(hashing_embedding('Stable across runs, really.').tobytes().hex())"
    )
    out = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": s},
        ).stdout
        for s in ("1", "2")
    }
    assert len(out) == 1
    assert bytes.fromhex(out.pop().strip()) == hashing_embedding("Stable across runs, really.").tobytes()


def test_hashing_embedding_similarity_tracks_wording() -> None:
    a = hashing_embedding("the refund was issued to your card yesterday")
    b = hashing_embedding("the refund was issued to your card today")
    c = hashing_embedding("kubernetes pods restart when the liveness probe fails")
    assert float(a @ b) > 0.6 > abs(float(a @ c))


def test_openinference_embedding_and_retrieval() -> None:
    attrs = {
        "openinference.span.kind": "RETRIEVER",
        "embedding.model_name": "text-embedding-3-small",
        "embedding.embeddings.0.embedding.vector": [0.1, 0.2, 0.3],
        "embedding.embeddings.0.embedding.text": "query",
        "retrieval.documents.0.document.id": "a",
        "retrieval.documents.0.document.score": 0.9,
        "retrieval.documents.1.document.id": "b",
        "retrieval.documents.1.document.score": 0.5,
        "retrieval.documents.2.document.content": "no score",
    }
    signals = extract_signals(attrs)
    assert signals.span_embedding is not None
    np.testing.assert_allclose(signals.span_embedding, np.array([0.1, 0.2, 0.3], dtype=np.float32))
    assert signals.embedding_model == "text-embedding-3-small"
    assert signals.retrieval_documents == 3 and signals.retrieval_empty is False
    assert signals.retrieval_score_mean == pytest.approx(0.7) and signals.retrieval_score_max == pytest.approx(0.9)


def test_empty_retrieval_and_configured_vector_key() -> None:
    empty = extract_signals({"openinference.span.kind": "RETRIEVER"})
    assert empty.retrieval_documents == 0 and empty.retrieval_empty is True and empty.retrieval_score_mean is None
    options = SignalOptions(
        embedding_vector_keys=("app.query_embedding",), embedding_model_keys=("app.embedding_model",)
    )
    vector, model = span_embedding(
        {"app.query_embedding": json.dumps([1.0, 2.0]), "app.embedding_model": "e5"}, options
    )
    assert vector is not None and vector.tolist() == [1.0, 2.0] and model == "e5"
    assert span_embedding({"embedding.embeddings.0.embedding.vector": "not json"})[0] is None
