"""The base price layer: Pydantic's `genai-prices` database, read offline.

Why this package (evaluated 2026-12-02, version 0.2.3, MIT licence): 47
providers and 2,330 models, prices as `Decimal`, dated price changes
(`ConditionalPrice` with a start date), request variants (OpenAI/Gemini
`service_tier` flex/priority, batch processing), Bedrock `global.` vs regional
inference profiles, long-context tiers and Anthropic 1-hour cache writes. Its
matching is explicit per model (equals / starts_with / regex clauses written
by hand), not a glob over families, so a TTS or embedding variant is its own
model. Lookup is a linear scan over a provider's models (~10-100 us), which is
why `processors.core.pricer` caches every resolution.

We use only the data and its matching. The package's `UpdatePrices` would
fetch from the network in a background thread; the worker never starts it.
The snapshot is the one the installed package ships, or a JSON file of the
same format that `llmops pricing update` wrote (`load_snapshot_file`).

Rates leave this module as integer pico-USD per token (micro-USD per 1M
tokens), the unit of `processors.core.pricing`. The few base prices with more than
six decimals (float artefacts in a handful of OpenRouter entries) are rounded
half-even to six decimals and the rounding is recorded as an assumption.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Final

from genai_prices import types as gp
from genai_prices.data_snapshot import find_provider_by_id

__all__ = ["BaseSnapshot", "BaseMatch", "BaseRates", "load_snapshot_file", "snapshot_bytes_version"]

_MICRO: Final = Decimal(1_000_000)

# OTel gen_ai.provider.name values (after processors.core.normalize.normalize_provider) -> genai-prices provider ids.
_PROVIDER_IDS: Final = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "azure": "azure",
    "aws.bedrock": "aws",
    "anthropic": "anthropic",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together": "together",
    "fireworks": "fireworks",
    "openrouter": "openrouter",
}


@dataclass(frozen=True, slots=True)
class BaseRates:
    """Integer micro-USD per 1M tokens (== pico-USD per token); tiers as (above_input_tokens, rates) high to low."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int | None
    rounded: bool


@dataclass(frozen=True, slots=True)
class BaseMatch:
    """A model found in the base: the provider that holds it and its ModelInfo."""

    provider_id: str
    model: gp.ModelInfo
    own_model: bool  # False when found through a fallback provider (e.g. Azure -> OpenAI): variants do not apply

    @property
    def entry(self) -> str:
        return f"{self.provider_id}/{self.model.id}"


def snapshot_bytes_version(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def load_snapshot_file(path: Path) -> tuple[list[gp.Provider], str]:
    """Providers from a genai-prices data JSON (the format of its `prices/data.json`);
    raise ValueError if it is not one."""
    data = path.read_bytes()
    try:
        raw = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON array of providers (genai-prices data.json format)")
    try:
        providers = gp._providers_from_raw(raw)  # the parser genai-prices' own updater uses
    except Exception as exc:  # pydantic ValidationError and friends: the file is not a price snapshot
        first = str(exc).splitlines()[0]
        raise ValueError(f"{path}: not a genai-prices snapshot: {first}") from None
    return providers, snapshot_bytes_version(data)


def _decimal_to_micro(value: Decimal) -> tuple[int, bool]:
    scaled = value * _MICRO
    exact = scaled == scaled.to_integral_value()
    return int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN)), not exact


class BaseSnapshot:
    """One immutable set of base prices with its version string.

    `version` is `genai-prices X.Y.Z` for the snapshot the package ships, or
    `sha256:...` of the JSON file it was loaded from.
    """

    def __init__(self, providers: list[gp.Provider], version: str) -> None:
        self.providers = providers
        self.version = version
        self._by_id = {p.id: p for p in providers}

    @classmethod
    def packaged(cls) -> BaseSnapshot:
        from genai_prices.data import providers

        return cls(providers, f"genai-prices {package_version('genai-prices')}")

    @classmethod
    def from_file(cls, path: Path) -> BaseSnapshot:
        providers, version = load_snapshot_file(path)
        return cls(providers, version)

    def model_count(self) -> int:
        return sum(len(p.models) for p in self.providers)

    def provider_for(self, provider: str) -> gp.Provider | None:
        pid = _PROVIDER_IDS.get(provider)
        if pid is not None:
            return self._by_id.get(pid)
        return find_provider_by_id(self.providers, provider) if provider else None

    def _guess_provider(self, model_ids: tuple[str, ...]) -> gp.Provider | None:
        """No provider on the span: a 'vendor/model' prefix, else the base's own model-name rules."""
        raw = model_ids[0] if model_ids else ""
        if "/" in raw:
            found = find_provider_by_id(self.providers, raw.split("/", 1)[0])
            if found is not None:
                return found
        for candidate in self.providers:
            if candidate.model_match is not None and any(candidate.model_match.is_match(ref) for ref in model_ids):
                return candidate
        return None

    def find(self, provider: str, model_ids: tuple[str, ...]) -> BaseMatch | None:
        """The base model for the first of `model_ids` (most specific first) that the provider prices.

        A `*-latest` alias is refused when the base lumps it with dated versions under one
        undated price (e.g. mistral-large-latest with mistral-large-2407/2411): the alias has
        moved on since, and a stale price is worse than none.
        """
        holder = self.provider_for(provider) if provider else self._guess_provider(model_ids)
        if holder is None:
            return None
        for ref in model_ids:
            found = holder.find_model(ref, all_providers=self.providers)
            if found is not None and ref.endswith("-latest") and pinned_alias(found, ref):
                return None
            if found is not None:
                own = any(found is m for m in holder.models)
                owner = holder.id if own else self._owner_of(found, holder)
                return BaseMatch(owner, found, own)
        return None

    def _owner_of(self, model: gp.ModelInfo, holder: gp.Provider) -> str:
        for pid in holder.fallback_model_providers or ():
            other = self._by_id.get(pid)
            if other is not None and any(model is m for m in other.models):
                return pid
        return holder.id

    @staticmethod
    def rates(
        match: BaseMatch, at: datetime, context: dict[str, str]
    ) -> tuple[BaseRates, tuple[tuple[int, BaseRates], ...]] | None:
        """Rates of `match` at `at` under `context` (service_tier / processing); None if it has no token price."""
        prices = match.model.get_prices(at, context if (context and match.own_model) else None)
        fields = {
            "input": getattr(prices, "input_mtok", None),
            "output": getattr(prices, "output_mtok", None),
            "cache_read": getattr(prices, "cache_read_mtok", None),
            "cache_write": getattr(prices, "cache_write_mtok", None),
            "reasoning": getattr(prices, "output_reasoning_mtok", None),
        }
        if fields["input"] is None and fields["output"] is None:
            return None  # priced per request, image, audio second...: not something token counts can pay for
        thresholds = sorted(
            {t.start for v in fields.values() if isinstance(v, gp.TieredPrices) for t in v.tiers}, reverse=True
        )
        base = _rates_at(fields, None)
        return base, tuple((t, _rates_at(fields, t)) for t in thresholds)


_DATED_ID: Final = re.compile(r"-(?:\d{4}|\d{4}-\d{2}-\d{2}|\d{8})(?:-v\d+(?::\d+)?)?$")


def _literals(clause: Any) -> list[str]:
    if isinstance(clause, gp.ClauseEquals):
        return [clause.equals]
    if isinstance(clause, gp.ClauseStartsWith):
        return [clause.starts_with]
    if isinstance(clause, (gp.ClauseOr, gp.ClauseAnd)):
        inner = clause.or_ if isinstance(clause, gp.ClauseOr) else clause.and_
        return [lit for sub in inner for lit in _literals(sub)]
    return []


def pinned_alias(model: gp.ModelInfo, alias: str) -> bool:
    """True when `alias` shares `model` with dated version ids and the model's price never changes by date."""
    dated_prices = isinstance(model.prices, list) and any(c.constraint is not None for c in model.prices)
    if dated_prices:
        return False
    return any(lit != alias and _DATED_ID.search(lit) for lit in _literals(model.match))


def _price_at(value: Decimal | gp.TieredPrices | None, above: int | None) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    price = value.base
    if above is not None:
        for tier in value.tiers:  # ascending
            if above >= tier.start:
                price = tier.price
    return price


def _rates_at(fields: dict[str, Any], above: int | None) -> BaseRates:
    rounded = False

    def micro(value: Decimal | None, fallback: int | None) -> int | None:
        nonlocal rounded
        if value is None:
            return fallback
        n, r = _decimal_to_micro(value)
        rounded = rounded or r
        return n

    inp = micro(_price_at(fields["input"], above), 0)
    assert inp is not None
    return BaseRates(
        input=inp,
        output=micro(_price_at(fields["output"], above), 0) or 0,
        cache_read=micro(_price_at(fields["cache_read"], above), inp) or 0,
        cache_write=micro(_price_at(fields["cache_write"], above), inp) or 0,
        reasoning=micro(_price_at(fields["reasoning"], above), None),
        rounded=rounded,
    )
