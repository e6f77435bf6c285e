"""Price each call from three layers: the user's pricing files > the project's catalog > the base database.

Layers (first that prices the call wins):

1. entries of the user's pricing files (`--pricing-file`), later files first;
2. the project's own entries and uplifts (`schemas/pricing/catalog.yaml`):
   corrections the base lacks, each with its `reason`; an uplift scales the
   base's price where a call runs (Azure data zones, Bedrock GovCloud, ...);
3. the base: `genai-prices` (processors.core.price_base), the snapshot the package
   ships or the file `llmops pricing update` wrote.

Each call records which layer and entry priced it (`pricing_source`,
`pricing_entry`), the base snapshot's version, its deployment key and service
tier (processors.core.deployment) and, when the span did not say where or how the
call ran, the assumption the price rests on (`pricing_assumption`).

Resolution is cached per (provider, models, UTC day) and, for providers whose
price depends on where or how a call ran, per the span attributes that say it
(processors.core.deployment): a dated price change takes effect at a day boundary,
so one resolution holds for the whole day; after that a call costs one or two
dict lookups and integer arithmetic. The cache is bounded (`_CACHE_MAX`).

Price files change under a running worker: every `reload_interval_s` the
pricer compares the files' mtimes and sizes and, when one changed, reloads
everything, logs the entries that changed, and drops the cache. A file that
no longer parses is logged and the previous prices stay in force.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Final

from processors.core.bounds import MAX_LABEL_CHARS
from processors.core.deployment import TIER_ATTRIBUTES, deployment_of, is_located, service_tier_of, tier_said
from processors.core.price_base import BaseMatch, BaseRates, BaseSnapshot
from processors.core.pricing import PricingCatalog, PricingError, cost_pico
from processors.core.records import LLMCall, SpanView

__all__ = ["Pricer", "Resolution", "PricerSources", "describe_changes"]

log = logging.getLogger(__name__)

_NS_PER_DAY: Final = 86_400 * 10**9
# Cache entries, both levels counted: far above the (provider, model, deployment, tier) variants
# a worker sees in a day, and a bound on what spans with ever-new ids can make it hold (~20 MB).
_CACHE_MAX: Final = 10_000
# Cost = integer pico-USD times this (processors.core.pricing).
_PICO_USD: Final = Decimal("1E-12")
_EMPTY: Final[dict] = {}
# Anthropic prices a cache write by its TTL (5 minutes: 1.25x input, 1 hour: 2x); spans carry one
# cache-write count and no TTL, so writes are priced at the 5-minute rate and the call says so.
_CACHE_TTL_NOTE: Final = "cache writes at the 5-minute price (the span does not say 1-hour)"

_REGION_PROVIDERS: Final = {
    "aws.bedrock": "region not on span: in-region list price",
    "azure.ai.openai": "deployment not on span: global standard price",
    "gcp.vertex_ai": "region not on span: global price",
}
_TIER_PROVIDERS: Final = frozenset({"openai"})
_TIER_0, _TIER_1, _TIER_2, _TIER_3 = TIER_ATTRIBUTES


@dataclass(frozen=True, slots=True)
class Resolution:
    """What prices a (provider, model, deployment, tier, day): the layer, the entry, its rates, the assumption."""

    source: str  # "user" | "project" | "base"
    entry: str
    base: object  # rates: .input .output .cache_read .cache_write (.reasoning None = billed as output)
    tiers: tuple[tuple[int, object], ...]  # (above_input_tokens, rates), highest first
    assumption: str


# What the cache holds for a call: its pricing columns (region, tier, version, entry, source,
# assumption), then the base rates (None: unpriced) and the long-context tiers (threshold, rates).
_Outcome = tuple[str, str, str, str, str, str, object | None, tuple[tuple[int, object], ...]]


@dataclass(slots=True)
class _ByAttributes:
    """Outcomes of one (provider, models, day) whose price also depends on span attributes.

    `tier` (OpenAI): keyed by the four service-tier attributes of the span; else (Bedrock, Azure,
    Vertex): by server.address and cloud.region of the span and of its resource.
    """

    tier: bool
    outcomes: dict[tuple, _Outcome] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PricerSources:
    """Files the pricer reads; `snapshot` may not exist yet (then the packaged base is used)."""

    pricing_files: tuple[Path, ...] = ()
    snapshot: Path | None = None
    include_project: bool = True


def _scaled(rates: BaseRates, factor: Fraction) -> BaseRates:
    """Rates times an exact factor; a result that is not a whole micro-USD is rounded half-even (and flagged)."""
    rounded = rates.rounded

    def scale(value: int | None) -> int | None:
        nonlocal rounded
        if value is None:
            return None
        exact = value * factor
        if exact.denominator != 1:
            rounded = True
        return round(exact)  # Fraction rounds half to even

    return BaseRates(
        input=scale(rates.input) or 0,
        output=scale(rates.output) or 0,
        cache_read=scale(rates.cache_read) or 0,
        cache_write=scale(rates.cache_write) or 0,
        reasoning=scale(rates.reasoning),
        rounded=rounded,
    )


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _load(sources: PricerSources) -> tuple[PricingCatalog, BaseSnapshot]:
    catalog = PricingCatalog.load(list(sources.pricing_files), include_default=sources.include_project)
    if sources.snapshot is not None and sources.snapshot.exists():
        try:
            base = BaseSnapshot.from_file(sources.snapshot)
        except (OSError, ValueError) as exc:
            raise PricingError(str(exc)) from None
    else:
        base = BaseSnapshot.packaged()
    return catalog, base


class Pricer:
    """The `CallEnricher` that sets cost and the pricing columns of each call."""

    def __init__(
        self,
        catalog: PricingCatalog,
        base: BaseSnapshot | None,
        sources: PricerSources | None = None,
        reload_interval_s: float = 0.0,
    ) -> None:
        self.catalog = catalog
        self.base = base
        self.sources = sources
        self.reload_interval_s = reload_interval_s
        self._cache: dict[tuple, _Outcome | _ByAttributes] = {}
        self._cached = 0
        self._version = base.version if base is not None else ""
        self._stats = self._stat_all()
        self._next_check = time.monotonic() + reload_interval_s if reload_interval_s > 0 else float("inf")

    @classmethod
    def load(cls, sources: PricerSources, reload_interval_s: float = 0.0) -> Pricer:
        catalog, base = _load(sources)
        return cls(catalog, base, sources, reload_interval_s)

    @property
    def version(self) -> str:
        return self.base.version if self.base is not None else ""

    # -- pricing ------------------------------------------------------------------------------

    def enrich(self, span: SpanView, call: LLMCall) -> None:
        """`CallEnricher` signature for processors.core.pipeline.CallStages.enrichers (the worker's hot path)."""
        if time.monotonic() >= self._next_check:
            self.reload_if_changed()
        self._priced(call, span.attributes, span.resource)

    def price(self, call: LLMCall, attributes: dict | None = None, resource: dict | None = None) -> None:
        """Set cost and the pricing columns of `call` (cost None and entry '' when unpriced)."""
        self._priced(call, attributes or _EMPTY, resource or _EMPTY)

    def _priced(self, call: LLMCall, attrs: dict, res: dict, found: _Outcome | _ByAttributes | None = None) -> None:
        """Set a call's pricing columns and exact cost: from the cache, or from `found` when given.

        The worker's hot path: the lookup and setting the columns are one function (a call more
        costs ~9% of it). The call's own fields (normalised, bounded) pick the entry; only for a
        provider whose price depends on where or how the call ran are span attributes read.
        """
        if found is None:
            key = (call.provider, call.response_model, call.request_model, call.ts_ns // _NS_PER_DAY)
            found = self._cache.get(key)
            if found is None:
                found = self._first_seen(key, call, attrs, res)
        if isinstance(found, _ByAttributes):
            get = attrs.get
            if found.tier:
                values: tuple = (get(_TIER_0), get(_TIER_1), get(_TIER_2), get(_TIER_3))
            else:  # deployment_of reads these from the span, else from its resource
                values = (
                    get("server.address"),
                    get("cloud.region"),
                    res.get("server.address"),
                    res.get("cloud.region"),
                )
            kept: tuple | None = values
            try:
                outcome = found.outcomes.get(values)
            except TypeError:  # an unhashable attribute value (a list): resolved, not kept
                outcome, kept = None, None
            found = outcome if outcome is not None else self._variant_seen(found, kept, call, attrs, res)
        (
            call.pricing_region,
            call.service_tier,
            call.pricing_version,
            call.pricing_entry,
            call.pricing_source,
            call.pricing_assumption,
            rates,
            tiers,
        ) = found
        if rates is None:
            call.cost = None
            return
        if call.cache_write_tokens and "claude" in call.model.lower():
            note = call.pricing_assumption
            call.pricing_assumption = f"{note}; {_CACHE_TTL_NOTE}" if note else _CACHE_TTL_NOTE
        input_tokens = call.input_tokens
        if tiers:
            for threshold, tier_rates in tiers:  # highest first
                if input_tokens > threshold:
                    rates = tier_rates
                    break
        pico = cost_pico(
            rates,  # type: ignore[arg-type]
            input_tokens,
            call.output_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        )
        call.cost = _PICO_USD * pico  # exact: an int times 1E-12 (what Decimal(pico).scaleb(-12) gives, in one step)

    def _first_seen(self, key: tuple, call: LLMCall, attrs: dict, res: dict) -> _Outcome | _ByAttributes:
        provider = call.provider
        if provider in _TIER_PROVIDERS or is_located(provider):
            found: _Outcome | _ByAttributes = _ByAttributes(tier=provider in _TIER_PROVIDERS)
        else:
            found = self._outcome(call, attrs, res)
        self._remember(self._cache, key, found)
        return found

    def _variant_seen(
        self, table: _ByAttributes, values: tuple | None, call: LLMCall, attrs: dict, res: dict
    ) -> _Outcome:
        found = self._outcome(call, attrs, res)
        # Only short strings are kept as keys: anything else is resolved again each time.
        if values is not None and all(v is None or (v.__class__ is str and len(v) <= MAX_LABEL_CHARS) for v in values):
            self._remember(table.outcomes, values, found)
        return found

    def _remember(self, table: dict, key: tuple, found: _Outcome | _ByAttributes) -> None:
        """Store one cache entry; at _CACHE_MAX entries (both levels counted) the whole cache starts over."""
        if self._cached >= _CACHE_MAX:
            self._cache.clear()
            self._cached = 0
        table[key] = found
        self._cached += 1

    def clear_cache(self) -> None:
        self._cache.clear()
        self._cached = 0

    @property
    def cached(self) -> int:
        """Entries in the cache (resolutions, and per-model tables of deployment / tier variants)."""
        return self._cached

    def _outcome(self, call: LLMCall, attrs: dict, res: dict) -> _Outcome:
        provider = call.provider
        region = deployment_of(provider, call.request_model, attrs, res) if call.request_model else ""
        if not region and call.response_model:
            region = deployment_of(provider, call.response_model, attrs, res)
        tier = service_tier_of(provider, attrs)
        known_tier = provider not in _TIER_PROVIDERS or tier_said(attrs)
        day_ns = call.ts_ns - call.ts_ns % _NS_PER_DAY
        resolution = self.resolve(provider, (call.response_model, call.request_model), region, tier, known_tier, day_ns)
        return self._outcome_of(region, tier, resolution)

    def _outcome_of(self, region: str, tier: str, resolution: Resolution | None) -> _Outcome:
        if resolution is None:
            return (region, tier, self._version, "", "", "", None, ())
        return (
            region,
            tier,
            self._version,
            resolution.entry,
            resolution.source,
            resolution.assumption,
            resolution.base,
            resolution.tiers,
        )

    def price_stored(self, call: LLMCall, region: str, tier: str) -> None:
        """Price a call read back from llm_calls, whose deployment key and tier were stored with it."""
        day_ns = call.ts_ns - call.ts_ns % _NS_PER_DAY
        resolution = self.resolve(call.provider, (call.response_model, call.request_model), region, tier, True, day_ns)
        self._priced(call, _EMPTY, _EMPTY, self._outcome_of(region, tier, resolution))

    def resolve(
        self,
        provider: str,
        models: Sequence[str],
        region: str = "",
        tier: str = "",
        known_tier: bool = True,
        at_ns: int = 0,
    ) -> Resolution | None:
        """The layer and entry that price the first of `models` that any layer prices (uncached)."""
        notes: list[str] = []
        if not region and provider in _REGION_PROVIDERS:
            notes.append(_REGION_PROVIDERS[provider])
        if not known_tier:
            notes.append("service tier not on span: standard price")
        seen: set[str] = set()
        for model in models:
            if not model or model in seen:
                continue
            seen.add(model)
            rule = self.catalog.rule(model, provider, at_ns, region, tier)
            if rule is not None:
                return Resolution(
                    "user" if rule.user else "project", rule.entry.id, rule.base, rule.tiers, "; ".join(notes)
                )
            found = self._base_resolution(provider, model, region, tier, at_ns, notes)
            if found is not None:
                return found
        return None

    def _base_resolution(
        self, provider: str, model: str, region: str, tier: str, at_ns: int, notes: list[str]
    ) -> Resolution | None:
        if self.base is None:
            return None
        candidates = list(self.catalog.candidates(model))
        if provider.startswith("azure"):
            # LiteLLM-style 'azure/eu/gpt-4o' or 'azure/gpt-4o': the base knows the model id alone.
            stripped = model.strip().lower().split("/")[-1]
            if stripped not in candidates:
                candidates.insert(1, stripped)
        match = self.base.find(provider, tuple(candidates))
        if match is None:
            return None
        context: dict[str, str] = {}
        if tier == "batch":
            context["processing"] = "batch"
        elif tier:
            context["service_tier"] = tier
        at = datetime.fromtimestamp(at_ns / 1e9, tz=UTC)
        priced = BaseSnapshot.rates(match, at, context)
        if priced is None:
            return None
        base, tiers = priced
        entry, source = f"base:{match.entry}", "base"
        extra = list(notes)
        found_uplift = self.catalog.uplift_for(provider, region, entry, at.date()) if region else None
        if found_uplift is not None:
            uplift, user = found_uplift
            factor = uplift.fraction()
            base = _scaled(base, factor)
            tiers = tuple((t, _scaled(r, factor)) for t, r in tiers)
            entry, source = f"{uplift.id}:{entry}", "user" if user else "project"
        if not match.own_model:
            extra.append(f"{match.provider_id} list price (no {provider} price in the base)")
        if tier and not self._has_variant(match, context, at):
            extra.append(f"no {tier} price in the base: standard price")
        if base.rounded or any(r.rounded for _, r in tiers):
            extra.append("base price rounded to 6 decimals")
        return Resolution(source, entry, base, tiers, "; ".join(extra))

    @staticmethod
    def _has_variant(match: BaseMatch, context: dict[str, str], at: datetime) -> bool:
        """Whether the base has a price for this tier on that day (else the standard price was used)."""
        if not match.own_model:
            return False
        return any(
            all(context.get(k) == v for k, v in variant.when.items())
            and (variant.constraint is None or variant.constraint.active(at))
            for variant in match.model.price_variants or ()
        )

    # -- reloading ----------------------------------------------------------------------------

    def _watched(self) -> list[Path]:
        if self.sources is None:
            return []
        paths = list(self.sources.pricing_files)
        if self.sources.snapshot is not None:
            paths.append(self.sources.snapshot)
        return paths

    def _stat_all(self) -> dict[Path, tuple[int, int] | None]:
        return {path: _stat(path) for path in self._watched()}

    def reload_if_changed(self) -> bool:
        """Reload when a watched file changed (mtime or size); True when new prices are in force."""
        self._next_check = time.monotonic() + self.reload_interval_s if self.reload_interval_s > 0 else float("inf")
        stats = self._stat_all()
        if stats == self._stats or self.sources is None:
            return False
        self._stats = stats
        try:
            catalog, base = _load(self.sources)
        except PricingError as exc:
            log.error("pricing not reloaded, previous prices stay in force: %s", exc)
            return False
        changes = describe_changes(self.catalog, self.base, catalog, base)
        self.catalog, self.base = catalog, base
        self._version = base.version
        self.clear_cache()
        log.warning("pricing reloaded: %s", "; ".join(changes) if changes else "no entry changed")
        return True


def _entry_fingerprint(catalog: PricingCatalog) -> dict[str, str]:
    entries = {rule.entry.id: rule.entry.model_dump_json() for rule in catalog.rules}
    entries.update({f"uplift {u.id}": u.model_dump_json() for u, _ in catalog.uplifts})
    return entries


def describe_changes(
    old_catalog: PricingCatalog,
    old_base: BaseSnapshot | None,
    new_catalog: PricingCatalog,
    new_base: BaseSnapshot | None,
) -> list[str]:
    """Human-readable list of what a reload changed: entries added, removed, changed; base version."""
    before, after = _entry_fingerprint(old_catalog), _entry_fingerprint(new_catalog)
    out: list[str] = []
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    if added:
        out.append("added " + ", ".join(added))
    if removed:
        out.append("removed " + ", ".join(removed))
    if changed:
        out.append("changed " + ", ".join(changed))
    old_v = old_base.version if old_base else ""
    new_v = new_base.version if new_base else ""
    if old_v != new_v:
        base_changes = _base_changes(old_base, new_base)
        out.append(f"base {old_v or 'none'} -> {new_v or 'none'}" + (f" ({base_changes})" if base_changes else ""))
    return out


def _base_prices(base: BaseSnapshot | None) -> dict[str, str]:
    if base is None:
        return {}
    return {f"{p.id}/{m.id}": repr(m.prices) + repr(m.price_variants) for p in base.providers for m in p.models}


def _base_changes(old: BaseSnapshot | None, new: BaseSnapshot | None) -> str:
    before, after = _base_prices(old), _base_prices(new)
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    parts = []
    if changed:
        shown = ", ".join(changed[:20]) + (f" and {len(changed) - 20} more" if len(changed) > 20 else "")
        parts.append(f"prices changed: {shown}")
    if added:
        parts.append(f"{added} models added")
    if removed:
        parts.append(f"{removed} models removed")
    return "; ".join(parts)
