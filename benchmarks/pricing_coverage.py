"""Price coverage against LiteLLM's community price map: which chat models each price layer prices, and agrees on.

Not a test and not a runtime dependency: LiteLLM's map is read from its wheel, fetched by hand
(`pip download --no-deps -d /tmp/litellm litellm`, then unzip
`litellm/model_prices_and_context_window_backup.json`). Compares, model by model (chat models of
OpenAI, Anthropic, Google, AWS Bedrock, Azure, Mistral, xAI, Groq, DeepSeek, Cohere):

- the hand-written catalog of 2026-11-26 (tests/data/catalog_2026-11-26.yaml) alone,
- today's layers (project corrections over genai-prices),
- genai-prices' own model list: how many of its token-priced models the layers price.

"Agree" = input and output price per 1M tokens equal LiteLLM's (rounded to 6 decimals).

    .venv/bin/python benchmarks/pricing_coverage.py /tmp/litellm/litellm/model_prices_and_context_window_backup.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from processors.core.deployment import deployment_of
from processors.core.price_base import BaseMatch, BaseSnapshot
from processors.core.pricer import Pricer, PricerSources
from processors.core.pricing import PricingCatalog

PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex_ai-language-models": "gcp.vertex_ai",
    "vertex_ai-anthropic_models": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "azure": "azure.ai.openai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere_chat": "cohere",
}
ROOT = Path(__file__).resolve().parents[1]
AT_NS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 10**9


def _micro(per_token: float | None) -> int | None:
    if per_token is None:
        return None
    return int((Decimal(str(per_token)) * 10**12).quantize(Decimal(1)))


def _model_id(key: str, provider: str) -> str:
    # LiteLLM keys carry a route prefix ("bedrock/", "groq/", "xai/"...); azure keys keep their data zone.
    if provider.startswith("azure"):
        return key
    return (
        key.split("/", 1)[1]
        if "/" in key
        and not key.startswith(("us.", "eu."))
        and key.split("/", 1)[0]
        in {
            "bedrock",
            "groq",
            "xai",
            "mistral",
            "deepseek",
            "gemini",
            "vertex_ai",
            "cohere_chat",
            "anthropic",
            "openai",
            "converse",
        }
        else key
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("litellm_json", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = json.loads(args.litellm_json.read_text())
    old = Pricer(
        PricingCatalog.load([ROOT / "tests" / "data" / "catalog_2026-11-26.yaml"], include_default=False), None
    )
    new = Pricer.load(PricerSources())
    counts: Counter[str] = Counter()
    by_provider: dict[str, Counter[str]] = {}
    for key, spec in data.items():
        if not isinstance(spec, dict) or spec.get("mode") != "chat" or spec.get("litellm_provider") not in PROVIDERS:
            continue
        want = (_micro(spec.get("input_cost_per_token")), _micro(spec.get("output_cost_per_token")))
        if None in want:
            continue
        provider = PROVIDERS[spec["litellm_provider"]]
        model = _model_id(key, provider)
        counter = by_provider.setdefault(provider, Counter())
        counts["models"] += 1
        counter["models"] += 1
        for name, pricer in (("old", old), ("new", new)):
            region = deployment_of(provider, model, {}, {})  # the id's own region: azure/eu/..., us-gov.anthropic...
            resolution = pricer.resolve(provider, (model,), region, "", True, AT_NS - AT_NS % (86_400 * 10**9))
            if resolution is None:
                continue
            counts[f"{name}_priced"] += 1
            counter[f"{name}_priced"] += 1
            got = (resolution.base.input, resolution.base.output)  # type: ignore[attr-defined]
            if got == want:
                counts[f"{name}_agree"] += 1
                counter[f"{name}_agree"] += 1
    base = BaseSnapshot.packaged()
    token_models = priced_own = 0
    for base_provider in base.providers:
        for base_model in base_provider.models:
            if (
                BaseSnapshot.rates(BaseMatch(base_provider.id, base_model, True), datetime(2026, 12, 1, tzinfo=UTC), {})
                is None
            ):
                continue
            token_models += 1
            if (
                new.resolve(base_provider.id, (base_model.id,), "", "", True, AT_NS - AT_NS % (86_400 * 10**9))
                is not None
            ):
                priced_own += 1
    result = {
        "litellm_chat_models": counts["models"],
        **{k: v for k, v in counts.items() if k != "models"},
        "by_provider": {p: dict(c) for p, c in sorted(by_provider.items())},
        "base_token_priced_models": token_models,
        "base_models_priced_by_layers": priced_own,
        "base": base.version,
    }
    print(json.dumps(result, indent=None if not args.json else 2))


if __name__ == "__main__":
    main()
