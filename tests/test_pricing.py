"""Price catalog and exact cost math, checked against hand computations in Decimal."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from processors.pricing import PricingCatalog, PricingError, canonical_model, compute_cost, load_catalog_file
from processors.records import LLMCall

M = Decimal(1_000_000)
NOW_NS = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()) * 10**9

# Real model ids seen on spans, with the entry each must resolve to (on 2026-11-01).
REAL_IDS = {
    ("gpt-4o", "openai"): "openai/gpt-4o",
    ("gpt-4o-2024-08-06", "openai"): "openai/gpt-4o",
    ("openai/gpt-4o", ""): "openai/gpt-4o",
    ("gpt-4o-2024-05-13", "openai"): "openai/gpt-4o-2024-05-13",
    ("gpt-4o-mini-2024-07-18", "openai"): "openai/gpt-4o-mini",
    ("gpt-4o-mini", "azure.ai.openai"): "openai/gpt-4o-mini",
    ("gpt-35-turbo", "azure.ai.openai"): "openai/gpt-3.5-turbo",
    ("gpt-4.1-2025-04-14", "openai"): "openai/gpt-4.1",
    ("gpt-4.1-mini", "openai"): "openai/gpt-4.1-mini",
    ("gpt-4.1-nano", "openai"): "openai/gpt-4.1-nano",
    ("gpt-5", "openai"): "openai/gpt-5",
    ("gpt-5-mini-2025-08-07", "openai"): "openai/gpt-5-mini",
    ("gpt-5-nano", "openai"): "openai/gpt-5-nano",
    ("o1", "openai"): "openai/o1",
    ("o3", "openai"): "openai/o3",
    ("o3-mini", "openai"): "openai/o3-mini",
    ("o4-mini-2025-04-16", "openai"): "openai/o4-mini",
    ("text-embedding-3-small", "openai"): "openai/text-embedding-3-small",
    ("claude-sonnet-4-20250514", "anthropic"): "anthropic/claude-sonnet-4",
    ("claude-sonnet-4-0", "anthropic"): "anthropic/claude-sonnet-4",
    ("claude-sonnet-4@20250514", "gcp.vertex_ai"): "anthropic/claude-sonnet-4",
    ("anthropic.claude-sonnet-4-20250514-v1:0", "aws.bedrock"): "anthropic/claude-sonnet-4",
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "aws.bedrock"): "anthropic/claude-sonnet-4",
    ("claude-sonnet-4-5-20250929", "anthropic"): "anthropic/claude-sonnet-4.5",
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws.bedrock"): "anthropic/claude-sonnet-4.5",
    ("claude-opus-4-1-20250805", "anthropic"): "anthropic/claude-opus-4.1",
    ("claude-opus-4-20250514", "anthropic"): "anthropic/claude-opus-4",
    ("claude-opus-4-5-20251101", "anthropic"): "anthropic/claude-opus-4.5",
    ("claude-3-7-sonnet-20250219", "anthropic"): "anthropic/claude-3.7-sonnet",
    ("claude-3-5-sonnet-20241022", "anthropic"): "anthropic/claude-3.5-sonnet",
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "aws.bedrock"): "anthropic/claude-3.5-sonnet",
    ("claude-3-5-sonnet-v2@20241022", "gcp.vertex_ai"): "anthropic/claude-3.5-sonnet",
    ("claude-3-5-haiku-20241022", "anthropic"): "anthropic/claude-3.5-haiku",
    ("claude-haiku-4-5-20251001", "anthropic"): "anthropic/claude-haiku-4.5",
    ("claude-3-haiku-20240307", "anthropic"): "anthropic/claude-3-haiku",
    ("gemini-2.5-pro", "gcp.gemini"): "google/gemini-2.5-pro",
    ("publishers/google/models/gemini-2.5-pro", "gcp.vertex_ai"): "google/gemini-2.5-pro",
    ("models/gemini-2.5-flash", "gcp.gemini"): "google/gemini-2.5-flash",
    ("gemini-2.5-flash-lite", "gcp.gemini"): "google/gemini-2.5-flash-lite",
    ("gemini-2.0-flash-001", "gcp.vertex_ai"): "google/gemini-2.0-flash",
    ("mistral-large-latest", "mistral_ai"): "mistral/mistral-large-2411",
    ("mistral.mistral-large-2407-v1:0", "aws.bedrock"): "mistral/mistral-large-2411",
    ("mistral-small-latest", "mistral_ai"): "mistral/mistral-small-3",
    ("mistral-medium-2505", "mistral_ai"): "mistral/mistral-medium-3",
    ("codestral-latest", "mistral_ai"): "mistral/codestral",
    ("command-a-03-2025", "cohere"): "cohere/command-a",
    ("command-r-plus-08-2024", "cohere"): "cohere/command-r-plus",
    ("cohere.command-r-v1:0", "aws.bedrock"): "cohere/command-r",
    ("command-r7b-12-2024", "cohere"): "cohere/command-r7b",
    ("deepseek-chat", "deepseek"): "deepseek/v3.2",
    ("deepseek-reasoner", "deepseek"): "deepseek/v3.2",
    ("grok-4-0709", "x_ai"): "xai/grok-4",
    ("grok-3-mini", "x_ai"): "xai/grok-3-mini",
}
UNPRICED = ["ft:gpt-4o-mini-2024-07-18:acme::abc123", "my-selfhosted-llama", "gpt-4o-mini-tts", "claude-sonnet-4-6-foo", ""]


@pytest.fixture(scope="module")
def catalog() -> PricingCatalog:
    return PricingCatalog.load()


def test_every_entry_parses_and_has_source_and_date() -> None:
    parsed = load_catalog_file(None)
    assert len(parsed.entries) >= 40
    for entry in parsed.entries:
        assert entry.source.startswith("https://"), entry.id
        assert entry.checked >= date(2026, 1, 1), entry.id
        for price in (entry.input, entry.output, entry.cache_read, entry.cache_write, entry.reasoning):
            assert price is None or Decimal(price) >= 0
        for tier in entry.tiers:
            assert Decimal(tier.input) >= Decimal(entry.input)
    providers = {entry.provider for entry in parsed.entries}
    assert {"openai", "anthropic", "gcp.gemini", "mistral_ai", "cohere", "deepseek", "x_ai"} <= providers


@pytest.mark.parametrize(("model", "provider"), sorted(REAL_IDS))
def test_real_ids_resolve_to_the_expected_entry(catalog: PricingCatalog, model: str, provider: str) -> None:
    entry = catalog.lookup(model, provider, NOW_NS)
    assert entry is not None and entry.id == REAL_IDS[(model, provider)]


def test_no_two_entries_match_ambiguously(catalog: PricingCatalog) -> None:
    """At every entry boundary date and for every real id, the top match is unique in rank."""
    days = sorted({e.effective_from for e in catalog.entries()} | {e.effective_to for e in catalog.entries() if e.effective_to})
    for model, provider in REAL_IDS:
        for day in days:
            at_ns = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()) * 10**9
            live = [r for r in catalog._matching(model, provider) if r.from_ns <= at_ns < r.to_ns]
            if len(live) < 2:
                continue
            same_file_and_platform = [r for r in live if r.rank[:2] == live[0].rank[:2]]
            assert len(same_file_and_platform) == 1, (model, day, [r.entry.id for r in live])


@pytest.mark.parametrize("model", UNPRICED)
def test_unknown_models_are_unpriced_not_zero(catalog: PricingCatalog, model: str) -> None:
    call = LLMCall(ts_ns=NOW_NS, trace_id="t", span_id="s", response_model=model, input_tokens=10, output_tokens=5)
    catalog.price(call)
    assert call.cost is None and call.pricing_entry == ""


def test_cost_with_cache_and_reasoning_matches_hand_computation(catalog: PricingCatalog) -> None:
    # gpt-4o: 2.50 in, 1.25 cached, 10.00 out. 1200 input of which 1000 cached, 300 output (50 reasoning).
    call = LLMCall(ts_ns=NOW_NS, trace_id="t", span_id="s", provider="openai", response_model="gpt-4o-2024-08-06",
                   input_tokens=1200, output_tokens=300, cache_read_tokens=1000, reasoning_tokens=50)
    catalog.price(call)
    expected = (Decimal(200) * Decimal("2.50") + Decimal(1000) * Decimal("1.25") + Decimal(300) * Decimal("10.00")) / M
    assert call.cost == expected == Decimal("0.00475")
    assert call.cost.as_tuple().exponent == -12
    assert call.pricing_entry == "openai/gpt-4o"


def test_anthropic_cache_write_and_long_context_tier(catalog: PricingCatalog) -> None:
    # Sonnet 4 under 200k: input 3, write 3.75, read 0.30, output 15.
    call = LLMCall(ts_ns=NOW_NS, trace_id="t", span_id="s", provider="anthropic", response_model="claude-sonnet-4-20250514",
                   input_tokens=5000 + 2000 + 3000, output_tokens=700, cache_read_tokens=3000, cache_write_tokens=2000)
    catalog.price(call)
    assert call.cost == (5000 * Decimal(3) + 2000 * Decimal("3.75") + 3000 * Decimal("0.30") + 700 * Decimal(15)) / M
    # Above 200k input (cache included) every token is billed at the long-context rate.
    big = LLMCall(ts_ns=NOW_NS, trace_id="t", span_id="s", provider="anthropic", response_model="claude-sonnet-4-20250514",
                  input_tokens=250_000, output_tokens=1000, cache_read_tokens=100_000)
    catalog.price(big)
    assert big.cost == (150_000 * Decimal(6) + 100_000 * Decimal("0.60") + 1000 * Decimal("22.50")) / M
    edge = LLMCall(ts_ns=NOW_NS, trace_id="t", span_id="s", response_model="gemini-2.5-pro", input_tokens=200_000, output_tokens=10)
    catalog.price(edge)
    assert edge.cost == (200_000 * Decimal("1.25") + 10 * Decimal(10)) / M  # exactly 200k is not "above"


def test_effective_dates_pick_the_price_of_the_day(catalog: PricingCatalog) -> None:
    def cost_on(day: datetime) -> Decimal | None:
        call = LLMCall(ts_ns=int(day.timestamp()) * 10**9, trace_id="t", span_id="s", response_model="o3",
                       input_tokens=1_000_000, output_tokens=1_000_000)
        catalog.price(call)
        return call.cost

    assert cost_on(datetime(2025, 5, 1, tzinfo=timezone.utc)) == Decimal(50)
    assert cost_on(datetime(2025, 6, 9, 23, 59, tzinfo=timezone.utc)) == Decimal(50)
    assert cost_on(datetime(2025, 6, 10, tzinfo=timezone.utc)) == Decimal(10)
    assert cost_on(datetime(2025, 1, 1, tzinfo=timezone.utc)) is None  # before the model existed


def test_user_file_overrides_and_adds(tmp_path: Path) -> None:
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({
        "aliases": {"prod-gpt4o-eastus": "gpt-4o-2024-08-06"},
        "entries": [
            {"id": "acme/gpt-4o-negotiated", "provider": "openai", "match": ["gpt-4o", "gpt-4o-2024-08-06"],
             "effective_from": "2024-01-01", "input": "2.00", "output": "8.00",
             "source": "https://example.com/contract", "checked": "2026-11-01"},
            {"id": "acme/llama", "provider": "self", "match": ["my-selfhosted-llama"],
             "effective_from": "2024-01-01", "input": "0.05", "output": "0.05",
             "source": "https://example.com/gpu-cost", "checked": "2026-11-01"},
        ],
    }))
    catalog = PricingCatalog.load([user])
    for model in ("gpt-4o", "prod-gpt4o-eastus", "azure/prod-gpt4o-eastus"):
        assert catalog.lookup(model, "azure.ai.openai", NOW_NS).id == "acme/gpt-4o-negotiated", model
    assert catalog.lookup("my-selfhosted-llama", "", NOW_NS).id == "acme/llama"
    assert catalog.lookup("gpt-4o-mini", "openai", NOW_NS).id == "openai/gpt-4o-mini"  # package still there
    explanation = catalog.check("gpt-4o", "openai", datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert explanation.chosen.id == "acme/gpt-4o-negotiated"
    text = explanation.render()
    assert "CHOSEN: user file" in text and "openai/gpt-4o" in text and "outranked" in text


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"input": 2.5}, "quoted decimal string"),
        ({"input": "0.0000001"}, "at most 6 decimals"),
        ({"colour": "red"}, "Extra inputs"),
        ({"source": "somewhere"}, "source"),
        ({"effective_to": "2023-01-01"}, "effective_to"),
    ],
)
def test_malformed_user_entries_fail_fast(tmp_path: Path, bad: dict, reason: str) -> None:
    entry = {"id": "x", "provider": "p", "match": ["m"], "effective_from": "2024-01-01", "input": "1", "output": "1",
             "source": "https://example.com", "checked": "2026-11-01", **bad}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"entries": [entry]}))
    with pytest.raises(PricingError, match=reason):
        PricingCatalog.load([path])


def test_compute_cost_reasoning_priced_separately() -> None:
    from processors.pricing import PriceEntry

    entry = PriceEntry(id="r", provider="p", match=["r"], effective_from=date(2024, 1, 1), input="1.000001",
                       output="4", reasoning="2.5", source="https://example.com", checked=date(2026, 11, 1))
    cost = compute_cost(entry, input_tokens=3, output_tokens=1000, reasoning_tokens=400)
    assert cost == (3 * Decimal("1.000001") + 600 * Decimal(4) + 400 * Decimal("2.5")) / M
    assert str(cost) == "0.003403000003"


def test_canonical_model() -> None:
    assert canonical_model("us.anthropic.claude-3-5-haiku-20241022-v1:0") == "claude-3-5-haiku-20241022"
    assert canonical_model("projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4@20250514") == "claude-opus-4-20250514"
    assert canonical_model("OpenAI/GPT-4o") == "gpt-4o"
    assert canonical_model("gpt-4.1-mini") == "gpt-4.1-mini"
