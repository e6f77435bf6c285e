"""Prices of real calls, checked by hand against the providers' pricing pages, exact to the pico-dollar.

Layers under test (processors.core.pricer): a user's pricing file > the project's catalog
(schemas/pricing/catalog.yaml) > the base database (genai-prices, processors.core.price_base).
Expected costs are computed here from the page prices written in the table, never read back
from the code under test.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from processors.core.deployment import deployment_of
from processors.core.price_base import BaseSnapshot
from processors.core.pricer import Pricer, PricerSources
from processors.core.pricing import PriceEntry, PricingCatalog, PricingError, Uplift, canonical_model, load_catalog_file
from processors.core.records import LLMCall

M = Decimal(1_000_000)
AT = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
AT_NS = int(AT.timestamp()) * 10**9
OLD_CATALOG = Path(__file__).with_name("data") / "catalog_2026-11-26.yaml"

# Pages (stored copies read through the search tool on 2026-12-02):
ANTHROPIC = "platform.claude.com/docs/en/docs/about-claude/pricing (model pricing table)"
PRIORITY = "openai.com/api-priority-processing/ (priority price table)"
VERTEX_REGIONAL = (
    "docs.claude.com/zh-CN/api/claude-on-vertex-ai (global: no premium; regional endpoints from Sonnet 4.5)"
)
BEDROCK_REGIONAL = (
    "clauder-navi.com/en/bedrock-claude-cost/ (Bedrock regional = global + 10%, from Sonnet/Haiku/Opus 4.5)"
)
AZURE_DZ = "directionsonmicrosoft.com/?p=124071 (Data Zone = Global + 10%)"

# Page prices, USD per 1M tokens: (input, 5m cache write, cache read, output).
Prices = tuple[str, str, str, str]
CLAUDE: dict[str, Prices] = {
    "opus-4.6": ("5", "6.25", "0.50", "25"),
    "opus-4.5": ("5", "6.25", "0.50", "25"),
    "opus-4.1": ("15", "18.75", "1.50", "75"),
    "opus-4": ("15", "18.75", "1.50", "75"),
    "sonnet-4.6": ("3", "3.75", "0.30", "15"),
    "sonnet-4.5": ("3", "3.75", "0.30", "15"),
    "sonnet-4": ("3", "3.75", "0.30", "15"),
    "sonnet-3.7": ("3", "3.75", "0.30", "15"),
    "haiku-4.5": ("1", "1.25", "0.10", "5"),
    "haiku-3.5": ("0.80", "1", "0.08", "4"),
    "haiku-3": ("0.25", "0.30", "0.03", "1.25"),
}


def _plus10(prices: Prices) -> Prices:
    inp, write, read, out = (str(Decimal(p) * Decimal("1.1")) for p in prices)
    return inp, write, read, out


# OpenAI priority (input, cached input, output) and Azure data zone, from the pages above.
GPT_PRIORITY = {
    "gpt-5": ("2.50", "0.250", "20.00"),
    "gpt-5-mini": ("0.45", "0.045", "3.60"),
    "gpt-4.1": ("3.50", "0.875", "14.00"),
    "gpt-5.1": ("2.50", "0.250", "20.00"),
    "gpt-5.2": ("3.50", "0.350", "28.00"),
    "gpt-5.4": ("5.00", "0.500", "30.00"),
    "gpt-5.4-mini": ("1.50", "0.150", "9.00"),
    "gpt-5.5": ("12.50", "1.250", "75.00"),
}

# (provider, request model, span attributes, page prices (input, cache write, cache read, output), source)
TABLE: list[tuple[str, str, dict, tuple[str, str, str, str], str]] = (
    [
        ("anthropic", "claude-opus-4-6", {}, CLAUDE["opus-4.6"], ANTHROPIC),
        ("anthropic", "claude-opus-4-5-20251101", {}, CLAUDE["opus-4.5"], ANTHROPIC),
        ("anthropic", "claude-opus-4-1-20250805", {}, CLAUDE["opus-4.1"], ANTHROPIC),
        ("anthropic", "claude-opus-4-20250514", {}, CLAUDE["opus-4"], ANTHROPIC),
        ("anthropic", "claude-sonnet-4-6", {}, CLAUDE["sonnet-4.6"], ANTHROPIC),
        ("anthropic", "claude-sonnet-4-5-20250929", {}, CLAUDE["sonnet-4.5"], ANTHROPIC),
        ("anthropic", "claude-sonnet-4-20250514", {}, CLAUDE["sonnet-4"], ANTHROPIC),
        ("anthropic", "claude-3-7-sonnet-20250219", {}, CLAUDE["sonnet-3.7"], ANTHROPIC),
        ("anthropic", "claude-haiku-4-5-20251001", {}, CLAUDE["haiku-4.5"], ANTHROPIC),
        ("anthropic", "claude-3-5-haiku-20241022", {}, CLAUDE["haiku-3.5"], ANTHROPIC),
        ("anthropic", "claude-3-haiku-20240307", {}, CLAUDE["haiku-3"], ANTHROPIC),
        # Bedrock: global profile at list price, in-region and geo profiles +10% (Sonnet/Haiku/Opus 4.5).
        ("aws.bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, CLAUDE["sonnet-4.5"], ANTHROPIC),
        (
            "aws.bedrock",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            {},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
            {},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "apac.anthropic.claude-sonnet-4-5-20250929-v1:0",
            {},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "au.anthropic.claude-sonnet-4-5-20250929-v1:0",
            {},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "jp.anthropic.claude-sonnet-4-5-20250929-v1:0",
            {},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "anthropic.claude-sonnet-4-5-20250929-v1:0",
            {"server.address": "bedrock-runtime.eu-west-1.amazonaws.com"},
            _plus10(CLAUDE["sonnet-4.5"]),
            BEDROCK_REGIONAL,
        ),
        ("aws.bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0", {}, CLAUDE["haiku-4.5"], ANTHROPIC),
        (
            "aws.bedrock",
            "apac.anthropic.claude-haiku-4-5-20251001-v1:0",
            {},
            _plus10(CLAUDE["haiku-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            {},
            _plus10(CLAUDE["haiku-4.5"]),
            BEDROCK_REGIONAL,
        ),
        ("aws.bedrock", "global.anthropic.claude-opus-4-5-20251101-v1:0", {}, CLAUDE["opus-4.5"], ANTHROPIC),
        (
            "aws.bedrock",
            "eu.anthropic.claude-opus-4-5-20251101-v1:0",
            {},
            _plus10(CLAUDE["opus-4.5"]),
            BEDROCK_REGIONAL,
        ),
        (
            "aws.bedrock",
            "au.anthropic.claude-opus-4-5-20251101-v1:0",
            {},
            _plus10(CLAUDE["opus-4.5"]),
            BEDROCK_REGIONAL,
        ),
        # Vertex AI: global endpoint at list price, regional endpoints +10%.
        (
            "gcp.vertex_ai",
            "claude-sonnet-4-5@20250929",
            {"server.address": "aiplatform.googleapis.com"},
            CLAUDE["sonnet-4.5"],
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "claude-sonnet-4-5@20250929",
            {"server.address": "us-east5-aiplatform.googleapis.com"},
            _plus10(CLAUDE["sonnet-4.5"]),
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "projects/p/locations/europe-west1/publishers/anthropic/models/claude-haiku-4-5@20251001",
            {},
            _plus10(CLAUDE["haiku-4.5"]),
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "claude-opus-4-5@20251101",
            {"cloud.region": "us-east5"},
            _plus10(CLAUDE["opus-4.5"]),
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "claude-opus-4-5@20251101",
            {"server.address": "aiplatform.googleapis.com"},
            CLAUDE["opus-4.5"],
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "claude-haiku-4-5@20251001",
            {"server.address": "aiplatform.googleapis.com"},
            CLAUDE["haiku-4.5"],
            VERTEX_REGIONAL,
        ),
        (
            "gcp.vertex_ai",
            "claude-haiku-4-5@20251001",
            {"server.address": "asia-southeast1-aiplatform.googleapis.com"},
            _plus10(CLAUDE["haiku-4.5"]),
            VERTEX_REGIONAL,
        ),
        # Azure OpenAI data zones (LiteLLM ids): Global + 10%.
        ("azure.ai.openai", "azure/eu/gpt-4o", {}, ("2.75", "2.75", "1.375", "11.00"), AZURE_DZ),
        ("azure.ai.openai", "azure/us/gpt-4o-mini", {}, ("0.165", "0.165", "0.0825", "0.66"), AZURE_DZ),
    ]
    + [
        # OpenAI priority processing, as the response's service tier says.
        ("openai", model, {"openai.response.service_tier": "priority"}, (p[0], p[0], p[1], p[2]), PRIORITY)
        for model, p in GPT_PRIORITY.items()
    ]
    + [
        # The request asked for priority and the response does not say: the request's tier.
        (
            "openai",
            "gpt-5-2025-08-07",
            {"openai.request.service_tier": "priority"},
            ("2.50", "2.50", "0.250", "20.00"),
            PRIORITY,
        ),
    ]
)

# Token mix per row: input (cache included), output, cache read, cache write.
MIXES = [(12_345, 678, 5_000, 1_200), (150_000, 4_321, 0, 0), (7, 3, 0, 0)]


def _call(provider: str, model: str, mix: tuple[int, int, int, int], at_ns: int = AT_NS) -> LLMCall:
    inp, out, read, write = mix
    return LLMCall(
        ts_ns=at_ns,
        trace_id="t",
        span_id="s",
        provider=provider,
        request_model=model,
        response_model=model,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _expected(prices: tuple[str, str, str, str], mix: tuple[int, int, int, int]) -> Decimal:
    inp, write_p, read_p, out_p = (Decimal(p) for p in prices)
    tokens_in, tokens_out, read, write = mix
    return ((tokens_in - read - write) * inp + write * write_p + read * read_p + tokens_out * out_p) / M


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer.load(PricerSources())


def test_table_has_at_least_40_real_calls() -> None:
    assert len(TABLE) >= 40
    assert len({(p, m, tuple(sorted(a.items()))) for p, m, a, _, _ in TABLE}) == len(TABLE)


@pytest.mark.parametrize("mix", MIXES, ids=["cached", "long", "tiny"])
@pytest.mark.parametrize(
    ("provider", "model", "attrs", "prices", "source"),
    TABLE,
    ids=[f"{r[0]}:{r[1]}:{sorted(r[2].values())}" for r in TABLE],
)
def test_real_call_costs_match_the_page_to_the_picodollar(
    pricer: Pricer, provider: str, model: str, attrs: dict, prices: tuple, source: str, mix: tuple
) -> None:
    if provider == "openai" and mix[3]:
        mix = (mix[0], mix[1], mix[2], 0)  # OpenAI has no cache writes
    call = _call(provider, model, mix)
    pricer.price(call, attrs, {})
    assert call.cost == _expected(prices, mix), (call.pricing_entry, source)
    assert call.cost.as_tuple().exponent == -12 and call.pricing_source in {"base", "project"}


# -- the three failure classes of issue 20, each failing on the hand-written catalog of 2026-11-26 ----------


def _old_catalog_pricer() -> Pricer:
    """Today's (pre-issue-20) hand-written catalog alone, kept as test data to show the failures."""
    return Pricer(PricingCatalog.load([OLD_CATALOG], include_default=False), None)


@pytest.mark.parametrize("which", ["new", "old"])
def test_regional_endpoints_are_not_priced_at_the_global_price(pricer: Pricer, which: str) -> None:
    subject = pricer if which == "new" else _old_catalog_pricer()
    mix = (10_000, 1_000, 0, 0)
    regional: list[tuple[str, str, dict[str, str], Prices]] = [
        ("aws.bedrock", "apac.anthropic.claude-sonnet-4-5-20250929-v1:0", {}, _plus10(CLAUDE["sonnet-4.5"])),
        ("aws.bedrock", "au.anthropic.claude-haiku-4-5-20251001-v1:0", {}, _plus10(CLAUDE["haiku-4.5"])),
        ("azure.ai.openai", "azure/eu/gpt-4o", {}, ("2.75", "2.75", "1.375", "11.00")),
    ]
    wrong = []
    for provider, model, attrs, prices in regional:
        call = _call(provider, model, mix)
        subject.price(call, attrs, {})
        if call.cost != _expected(prices, mix):
            wrong.append((model, call.cost, call.pricing_entry))
    if which == "new":
        assert wrong == []
    else:
        assert len(wrong) == 3  # the old catalog charged the global list price for all three


@pytest.mark.parametrize("which", ["new", "old"])
def test_a_latest_alias_is_not_priced_as_an_old_version(pricer: Pricer, which: str) -> None:
    subject = pricer if which == "new" else _old_catalog_pricer()
    call = _call("mistral_ai", "mistral-large-latest", (1000, 1000, 0, 0))
    subject.price(call, {}, {})
    pinned_to_old = call.pricing_entry in {"mistral/mistral-large-2411", "base:mistral/mistral-large"}
    assert pinned_to_old == (which == "old"), call.pricing_entry
    if which == "new":
        # Unpriced and honest until the alias is priced for what it points to now...
        assert call.cost is None
        # ...while the concrete version the response names is priced.
        concrete = _call("mistral_ai", "mistral-large-2512", (1000, 1000, 0, 0))
        concrete.request_model = "mistral-large-latest"
        subject.price(concrete, {}, {})
        assert concrete.pricing_entry == "base:mistral/mistral-large-2512"
        # An alias the base prices by date (it follows the alias) stays priced.
        medium = _call("mistral_ai", "mistral-medium-latest", (1000, 1000, 0, 0))
        subject.price(medium, {}, {})
        assert medium.pricing_entry == "base:mistral/mistral-medium-latest"


@pytest.mark.parametrize("which", ["new", "old"])
def test_a_glob_does_not_price_another_product(pricer: Pricer, which: str) -> None:
    subject = pricer if which == "new" else _old_catalog_pricer()
    call = _call("gcp.gemini", "gemini-2.5-pro-preview-tts", (1000, 1000, 0, 0))
    subject.price(call, {}, {})
    priced_as_chat = call.pricing_entry in {"google/gemini-2.5-pro", "base:google/gemini-2.5-pro"}
    assert priced_as_chat == (which == "old"), call.pricing_entry
    if which == "new":
        assert call.pricing_entry == "base:google/gemini-2.5-pro-tts"


# -- precedence and dates -------------------------------------------------------------------------------


def _user_file(tmp_path: Path, entries: list[dict], aliases: dict | None = None) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump({"aliases": aliases or {}, "entries": entries}))
    return path


def _entry(**kw: object) -> dict:
    base: dict[str, object] = {
        "id": "x",
        "provider": "openai",
        "match": ["gpt-4o"],
        "effective_from": "2024-01-01",
        "input": "1",
        "output": "1",
        "source": "our contract with the vendor, section 4",
        "checked": "2026-11-01",
    }
    base.update(kw)
    return base


def test_user_file_overrides_the_base_and_the_project_entries(tmp_path: Path) -> None:
    path = _user_file(
        tmp_path,
        [
            _entry(id="acme/gpt-4o", match=["gpt-4o"], input="2.00", output="8.00"),
            _entry(
                id="acme/azure-dz",
                provider="openai",
                platforms=["azure.ai.openai"],
                match=["gpt-4o"],
                input="2.10",
                output="8.40",
            ),
            _entry(
                id="acme/llama",
                provider="self",
                match=["my-selfhosted-llama"],
                input="0.05",
                output="0.05",
                source="GPU cost: 2x H100 at our reserved rate / measured throughput",
            ),
        ],
        aliases={"prod-gpt4o-eastus": "gpt-4o"},
    )
    pricer = Pricer.load(PricerSources(pricing_files=(path,)))
    mix = (1000, 100, 0, 0)
    base_call = _call("openai", "gpt-4o", mix)
    pricer.price(base_call, {}, {})
    assert (base_call.pricing_source, base_call.pricing_entry) == ("user", "acme/gpt-4o")
    assert base_call.cost == (1000 * Decimal("2.00") + 100 * Decimal("8.00")) / M
    dz = _call("azure.ai.openai", "azure/eu/gpt-4o", mix)  # the project's data-zone entry loses to the user's
    pricer.price(dz, {}, {})
    assert dz.pricing_entry == "acme/azure-dz" and dz.cost == (1000 * Decimal("2.10") + 100 * Decimal("8.40")) / M
    alias = _call("openai", "prod-gpt4o-eastus", mix)
    pricer.price(alias, {}, {})
    assert alias.pricing_entry == "acme/gpt-4o"
    mine = _call("", "my-selfhosted-llama", mix)
    pricer.price(mine, {}, {})
    assert mine.pricing_source == "user" and mine.cost == Decimal(1100) * Decimal("0.05") / M
    # Without the file: the project entry for the data zone, the base for the rest.
    plain = Pricer.load(PricerSources())
    for call, entry in (
        (_call("azure.ai.openai", "azure/eu/gpt-4o", mix), "azure-datazone:base:openai/gpt-4o"),
        (_call("openai", "gpt-4o", mix), "base:openai/gpt-4o"),
    ):
        plain.price(call, {}, {})
        assert call.pricing_entry == entry


def test_a_dated_change_applies_only_from_its_date(tmp_path: Path) -> None:
    path = _user_file(
        tmp_path,
        [
            _entry(id="acme/old", effective_from="2024-01-01", effective_to="2026-11-10", input="2.00", output="8.00"),
            _entry(id="acme/new", effective_from="2026-11-10", input="1.00", output="4.00"),
        ],
    )
    pricer = Pricer.load(PricerSources(pricing_files=(path,)))

    def cost(day: datetime) -> tuple[str, Decimal | None]:
        call = _call("openai", "gpt-4o", (1_000_000, 1_000_000, 0, 0), int(day.timestamp()) * 10**9)
        pricer.price(call, {}, {})
        return call.pricing_entry, call.cost

    assert cost(datetime(2026, 11, 9, 23, 59, 59, tzinfo=UTC)) == ("acme/old", Decimal(10))
    assert cost(datetime(2026, 11, 10, tzinfo=UTC)) == ("acme/new", Decimal(5))
    # Before the user's first entry: the base's price of that day.
    entry, _ = cost(datetime(2023, 6, 1, tzinfo=UTC))
    assert entry == "base:openai/gpt-4o"


def test_every_call_records_source_version_and_assumptions(pricer: Pricer) -> None:
    call = _call("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", (100, 10, 0, 0))
    pricer.price(call, {}, {})
    assert call.pricing_source == "base" and call.pricing_version.startswith("genai-prices ")
    assert call.pricing_region == "" and "region not on span" in call.pricing_assumption
    tier = _call("openai", "gpt-5", (100, 10, 0, 0))
    pricer.price(tier, {}, {})
    assert tier.service_tier == "" and "service tier not on span" in tier.pricing_assumption
    flex = _call("openai", "gpt-5", (100, 10, 0, 0))
    pricer.price(flex, {"openai.response.service_tier": "flex"}, {})
    assert flex.service_tier == "flex" and flex.pricing_assumption == ""
    gov = _call("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", (1_000_000, 1_000_000, 0, 0))
    pricer.price(gov, {"server.address": "bedrock-runtime.us-gov-west-1.amazonaws.com"}, {})
    assert gov.pricing_region == "aws:us-gov-west-1" and gov.pricing_source == "project"
    assert gov.pricing_entry == "bedrock-govcloud-claude:base:aws/regional.anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert gov.cost == Decimal("3.60") + Decimal("18.00")  # 1.2 x list (LiteLLM's GovCloud price; see the catalog)


def test_a_claude_cache_write_says_it_was_priced_at_the_5_minute_rate(pricer: Pricer) -> None:
    """Spans carry one cache-write count and no TTL: the 5-minute price applies and the call records it."""
    write = _call("anthropic", "claude-sonnet-4-5-20250929", (100_000, 0, 0, 100_000))
    pricer.price(write, {}, {})
    assert write.pricing_assumption == "cache writes at the 5-minute price (the span does not say 1-hour)"
    # All input tokens were cache writes (below the 200k long-context threshold): the 5-minute rate.
    assert write.cost == Decimal(CLAUDE["sonnet-4.5"][1]) * 100_000 / M
    for call in (
        _call("anthropic", "claude-sonnet-4-5-20250929", (1_000_000, 0, 0, 0)),  # no cache write
        _call("openai", "gpt-4o-2024-08-06", (1_000_000, 0, 0, 1_000)),  # no TTL-priced cache writes
    ):
        pricer.price(call, {"openai.response.service_tier": "default"}, {})
        assert "5-minute" not in call.pricing_assumption, call
    bedrock = _call("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", (100, 10, 0, 50))
    pricer.price(bedrock, {}, {})
    assert bedrock.pricing_assumption.endswith("; cache writes at the 5-minute price (the span does not say 1-hour)")
    again = _call("anthropic", "claude-sonnet-4-5-20250929", (100_000, 0, 0, 100_000))
    pricer.price(again, {}, {})  # from the cache: the note is not appended twice
    assert again.pricing_assumption == write.pricing_assumption


def test_uplifts_are_exact_and_a_user_uplift_wins(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "uplifts": [
                    {
                        "id": "acme-eu-deal",
                        "platforms": ["azure.ai.openai"],
                        "regions": ["azure:eu"],
                        "base_entries": ["base:openai/gpt-4o"],
                        "multiplier": "21/20",
                        "effective_from": "2025-01-01",
                        "source": "our EA amendment 3",
                        "checked": "2026-11-30",
                    }
                ]
            }
        )
    )
    pricer = Pricer.load(PricerSources(pricing_files=(path,)))
    call = _call("azure.ai.openai", "azure/eu/gpt-4o", (1_000_000, 1_000_000, 0, 0))
    pricer.price(call, {}, {})
    assert (call.pricing_source, call.pricing_entry) == ("user", "acme-eu-deal:base:openai/gpt-4o")
    assert call.cost == Decimal("2.625") + Decimal("10.50")
    path.write_text(
        yaml.safe_dump(
            {
                "uplifts": [
                    {
                        "id": "x",
                        "platforms": ["aws.bedrock"],
                        "regions": ["aws:*"],
                        "base_entries": ["*"],
                        "multiplier": 1.1,
                        "effective_from": "2025-01-01",
                        "source": "s",
                        "checked": "2026-11-30",
                    }
                ]
            }
        )
    )
    with pytest.raises(PricingError, match="multiplier"):
        PricingCatalog.load([path])


def test_deployment_keys() -> None:
    assert deployment_of("aws.bedrock", "us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0", {}, {}) == "aws:us-gov"
    assert (
        deployment_of("aws.bedrock", "anthropic.claude-3-haiku-20240307-v1:0", {}, {"cloud.region": "ap-south-1"})
        == "aws:ap-south-1"
    )
    assert deployment_of("azure.ai.openai", "azure/eu/gpt-4o", {}, {}) == "azure:eu"
    assert deployment_of("azure.ai.openai", "gpt-4o", {"cloud.region": "SwedenCentral"}, {}) == "azure:swedencentral"
    assert (
        deployment_of(
            "gcp.vertex_ai", "gemini-2.5-pro", {"server.address": "us-central1-aiplatform.googleapis.com"}, {}
        )
        == "gcp:us-central1"
    )
    assert deployment_of("openai", "gpt-4o", {"cloud.region": "us"}, {}) == ""


@pytest.mark.parametrize(
    "model", ["ft:gpt-4o-mini-2024-07-18:acme::abc123", "my-selfhosted-llama", "acme-internal-model-7b", ""]
)
def test_unknown_models_are_unpriced_not_zero(pricer: Pricer, model: str) -> None:
    call = _call("", model, (10, 5, 0, 0))
    pricer.price(call, {}, {})
    assert call.cost is None and call.pricing_entry == "" and call.pricing_source == ""


def test_long_context_tier_of_the_base_applies_above_its_threshold(pricer: Pricer) -> None:
    # Page: Sonnet 4.5 above 200k input tokens: $6 input, $22.50 output (long context pricing).
    call = _call("anthropic", "claude-sonnet-4-5-20250929", (250_000, 1000, 0, 0))
    pricer.price(call, {}, {})
    assert call.cost == (250_000 * Decimal(6) + 1000 * Decimal("22.50")) / M


# -- the pricing file format -------------------------------------------------------------------------------


def test_project_entries_each_have_a_reason_and_a_source() -> None:
    parsed = load_catalog_file(None)
    assert parsed.entries or parsed.uplifts
    items: list[PriceEntry | Uplift] = [*parsed.entries, *parsed.uplifts]
    for item in items:
        assert item.reason and item.source, item.id


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"input": 2.5}, "quoted decimal string"),
        ({"input": "0.0000001"}, "at most 6 decimals"),
        ({"colour": "red"}, "Extra inputs"),
        ({"source": "  "}, "source"),
        ({"effective_to": "2023-01-01"}, "effective_to"),
    ],
)
def test_malformed_user_entries_fail_fast(tmp_path: Path, bad: dict, reason: str) -> None:
    path = _user_file(tmp_path, [_entry(**bad)])
    with pytest.raises(PricingError, match=reason):
        PricingCatalog.load([path])


def test_compute_cost_reasoning_priced_separately(tmp_path: Path) -> None:
    path = _user_file(
        tmp_path, [_entry(id="r", provider="p", match=["r"], input="1.000001", output="4", reasoning="2.5")]
    )
    call = _call("p", "r", (3, 1000, 0, 0))
    call.reasoning_tokens = 400
    Pricer(PricingCatalog.load([path], include_default=False), None).price(call)
    cost = call.cost
    assert cost == (3 * Decimal("1.000001") + 600 * Decimal(4) + 400 * Decimal("2.5")) / M
    assert str(cost) == "0.003403000003"


def test_canonical_model() -> None:
    assert canonical_model("us.anthropic.claude-3-5-haiku-20241022-v1:0") == "claude-3-5-haiku-20241022"
    assert (
        canonical_model("projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4@20250514")
        == "claude-opus-4-20250514"
    )
    assert canonical_model("OpenAI/GPT-4o") == "gpt-4o"


# -- reloading without a restart ---------------------------------------------------------------------------


def test_a_changed_pricing_file_is_picked_up_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _user_file(tmp_path, [_entry(id="acme/gpt-4o", input="2.00", output="8.00")])
    pricer = Pricer.load(PricerSources(pricing_files=(path,)), reload_interval_s=3600)
    call = _call("openai", "gpt-4o", (1_000_000, 0, 0, 0))
    pricer.price(call, {}, {})
    assert call.cost == Decimal(2)
    assert not pricer.reload_if_changed()  # nothing changed
    path.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    _entry(id="acme/gpt-4o", input="1.50", output="8.00"),
                    _entry(id="acme/extra", match=["gpt-4o-mini"]),
                ]
            }
        )
    )
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    with caplog.at_level(logging.WARNING, logger="processors.core.pricer"):
        assert pricer.reload_if_changed()
    assert "added acme/extra" in caplog.text and "changed acme/gpt-4o" in caplog.text
    again = _call("openai", "gpt-4o", (1_000_000, 0, 0, 0))
    pricer.price(again, {}, {})
    assert again.cost == Decimal("1.5")
    # A broken edit keeps the previous prices and says why.
    path.write_text("entries: [ {id: broken")
    os.utime(path, ns=(path.stat().st_mtime_ns + 2 * 10**9,) * 2)
    with caplog.at_level(logging.ERROR, logger="processors.core.pricer"):
        assert not pricer.reload_if_changed()
    assert "previous prices stay in force" in caplog.text
    third = _call("openai", "gpt-4o", (1_000_000, 0, 0, 0))
    pricer.price(third, {}, {})
    assert third.cost == Decimal("1.5")


def test_a_snapshot_file_replaces_the_packaged_base(tmp_path: Path) -> None:
    from tests.pricing_snapshots import write_snapshot

    snapshot = tmp_path / "pricing-snapshot.json"
    pricer = Pricer.load(PricerSources(snapshot=snapshot), reload_interval_s=3600)
    assert pricer.version.startswith("genai-prices ")
    write_snapshot(snapshot, {("openai", "gpt-4o"): ("9", "90")})
    assert pricer.reload_if_changed()
    call = _call("openai", "gpt-4o", (1_000_000, 1_000_000, 0, 0))
    pricer.price(call, {}, {})
    assert call.cost == Decimal(99) and call.pricing_version.startswith("sha256:")
    assert isinstance(pricer.base, BaseSnapshot) and pricer.base.model_count() == 1


@pytest.mark.parametrize(("model", "standard"), [("gpt-5", ("1.25", "10.00")), ("gpt-4o", ("2.50", "10.00"))])
def test_batch_tier_is_half_price_and_an_unknown_tier_day_is_flagged(
    pricer: Pricer, model: str, standard: tuple[str, str]
) -> None:
    # "Batch API: Save 50% on inputs and outputs" (nicolalazzari.ai/articles/openai-api-pricing-explained-2026,
    # quoting developers.openai.com/api/docs/pricing; read 2026-12-02).
    # Standard prices: chatgptpricing-akr.pages.dev/api-pricing (GPT-5 $1.25/$10.00, GPT-4o $2.50/$10.00,
    # batch half of each; source named there: developers.openai.com/api/docs/pricing).
    mix = (20_000, 3_000, 0, 0)
    call = _call("openai", model, mix)
    pricer.price(call, {"openai.response.service_tier": "batch"}, {})
    inp, out = (Decimal(p) for p in standard)
    assert call.cost == (mix[0] * inp + mix[1] * out) / 2 / M and call.service_tier == "batch"
    # The base's batch prices start 2026-10-12: before that the standard price, and the record says so.
    early = _call("openai", model, mix, int(datetime(2025, 11, 15, tzinfo=UTC).timestamp()) * 10**9)
    pricer.price(early, {"openai.response.service_tier": "batch"}, {})
    assert early.cost == (mix[0] * inp + mix[1] * out) / M and "no batch price in the base" in early.pricing_assumption


# -- the cache: a cached call is priced as an uncached one, and the cache stays bounded --------------------

_COLUMNS = (
    "cost",
    "pricing_entry",
    "pricing_source",
    "pricing_version",
    "pricing_region",
    "service_tier",
    "pricing_assumption",
)
HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"
EU_HOST = "bedrock-runtime.eu-west-1.amazonaws.com"
# One (provider, model, day) each, priced under different span attributes and resources.
VARIANTS: list[tuple[str, str, dict[str, object], dict[str, object]]] = [
    ("aws.bedrock", HAIKU_35, {}, {}),
    ("aws.bedrock", HAIKU_35, {"server.address": EU_HOST}, {}),
    ("aws.bedrock", HAIKU_35, {}, {"server.address": EU_HOST}),  # deployment_of falls back to the resource
    ("aws.bedrock", HAIKU_35, {}, {"cloud.region": "us-gov-west-1"}),
    ("aws.bedrock", HAIKU_35, {"server.address": ["not", "a", "host"]}, {}),  # unhashable: resolved, not cached
    (
        "aws.bedrock",
        HAIKU_35,
        {"server.address": "bedrock-runtime." + "x" * 5_000 + ".amazonaws.com"},
        {},
    ),  # over the label bound
    ("openai", "gpt-5", {}, {}),
    ("openai", "gpt-5", {"openai.response.service_tier": "flex"}, {}),
    ("openai", "gpt-5", {"openai.request.service_tier": "priority"}, {}),
    ("openai", "gpt-5", {"openai.response.service_tier": "default", "openai.request.service_tier": "priority"}, {}),
    ("openai", "gpt-5", {"openai.response.service_tier": 3}, {}),
    ("gcp.vertex_ai", "claude-haiku-4-5@20251001", {"server.address": "aiplatform.googleapis.com"}, {}),
    ("gcp.vertex_ai", "claude-haiku-4-5@20251001", {}, {"server.address": "asia-southeast1-aiplatform.googleapis.com"}),
    ("anthropic", "claude-haiku-4-5-20251001", {"server.address": "api.anthropic.com"}, {}),
]


def _columns(call: LLMCall) -> tuple:
    return tuple(getattr(call, name) for name in _COLUMNS)


def test_a_cached_call_is_priced_as_an_uncached_one() -> None:
    uncached = Pricer.load(PricerSources())
    shared = Pricer.load(PricerSources())
    mix = (50_000, 2_000, 10_000, 0)
    for provider, model, attrs, resource in VARIANTS * 3:  # every variant also meets a cache filled by the others
        expected = _call(provider, model, mix)
        uncached.clear_cache()
        uncached.price(expected, attrs, resource)
        got = _call(provider, model, mix)
        shared.price(got, attrs, resource)
        assert _columns(got) == _columns(expected), (provider, model, attrs, resource)
    regions = {}
    for provider, model, attrs, resource in VARIANTS[:4]:
        call = _call(provider, model, mix)
        shared.price(call, attrs, resource)
        regions[call.pricing_region] = call.cost
    assert set(regions) == {"", "aws:eu-west-1", "aws:us-gov-west-1"}  # the resource's host is not the span's ''
    # 4 (provider, model, day) entries; kept variants: 4 Bedrock, 4 OpenAI (the int tier is not kept), 2 Vertex.
    assert shared.cached == 4 + 4 + 4 + 2


def test_the_cache_is_bounded_and_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    import processors.core.pricer as pricer_module

    monkeypatch.setattr(pricer_module, "_CACHE_MAX", 20)
    pricer = Pricer.load(PricerSources())
    most = 0
    for n in range(60):
        call = _call("aws.bedrock", HAIKU_35, (1_000_000, 0, 0, 0))
        pricer.price(call, {"cloud.region": f"eu-test-{n}"}, {})
        assert call.pricing_region == f"aws:eu-test-{n}" and call.cost is not None
        most = max(most, pricer.cached)
    assert most == 20 and pricer.cached < 20
