"""Exact per-call cost from a versioned price catalog.

Why integers: prices are per 1M tokens with at most 6 decimals, so a price is
an integer number of micro-USD per 1M tokens, i.e. pico-USD (1e-12 USD) per
token. A call's cost is then an exact integer of pico-USD, turned into a
Decimal with 12 decimal places: the ClickHouse column Decimal(38, 12). No
float ever touches money.

Billing rule (OTel GenAI token semantics: input includes cache reads and
writes, output includes reasoning):

    input billed   = input - cache_read - cache_write        at `input`
    cache reads                                               at `cache_read`  (default: input price)
    cache writes                                              at `cache_write` (default: input price)
    output billed  = output - reasoning  if the entry prices `reasoning`, else output   at `output`
    reasoning      (only when priced separately)              at `reasoning`

The tier is chosen by the call's input tokens (cache included): the highest
tier whose `above_input_tokens` is exceeded replaces all base prices.

Entry selection for a (model, provider, deployment region, service tier,
time): entries whose patterns match the model id (raw lower-case, or canonical
form), whose `platforms` (if any) contain the call's provider, whose `regions`
and `service_tiers` (if any) contain the call's, and whose [effective_from,
effective_to) contains the call's day. Among those, the best rank wins: user
files over the project's catalog, then platform-, region- and tier-specific
over generic, exact ids over globs, longer patterns over shorter.
`PricingCatalog.check` explains a decision. This module is the YAML layer only:
`processors.core.pricer` puts it above the base price database and prices calls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from fractions import Fraction
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from processors.core.errors import PermanentError
from processors.core.normalize import normalize_provider

__all__ = [
    "PricingError",
    "Tier",
    "PriceEntry",
    "Uplift",
    "PricingCatalog",
    "MatchExplanation",
    "canonical_model",
    "cost_pico",
    "load_catalog_file",
    "DEFAULT_CATALOG",
]

DEFAULT_CATALOG: Final = "catalog.yaml"  # inside the schemas.pricing package
_NS_PER_DAY: Final = 86_400 * 10**9
_PRICE_RE: Final = re.compile(r"^\d+(\.\d{1,6})?$")
_FAR_FUTURE_NS: Final = 2**63 - 1
_MATCH_CACHE_MAX: Final = 10_000  # (provider, model id) pairs whose matching entries are kept

# Bedrock ids: optional cross-region inference prefix, vendor prefix, version suffix.
_BEDROCK_REGION_RE: Final = re.compile(r"^(?:us|eu|apac|ap|global|us-gov|jp|au|ca)\.")
_BEDROCK_VENDOR_RE: Final = re.compile(
    r"^(?:anthropic|meta|mistral|cohere|amazon|ai21|deepseek|openai|writer|qwen|google|xai)\."
)
_BEDROCK_VERSION_RE: Final = re.compile(r"-v\d+(?::\d+)?$|:\d+$")


class PricingError(PermanentError, ValueError):
    """A catalog file is malformed (bad price, unknown key, duplicate id); fail at start-up."""


def _check_price(value: Any) -> str:
    """Prices are quoted decimal strings: YAML floats would already be inexact."""
    if not isinstance(value, str):
        raise ValueError(f"price {value!r} must be a quoted decimal string, not a YAML number (floats are inexact)")
    value = value.strip()
    if not _PRICE_RE.match(value):
        raise ValueError(f"price {value!r}: need a decimal string with at most 6 decimals (USD per 1M tokens)")
    return value


PriceStr = Annotated[str, BeforeValidator(_check_price)]


class Tier(BaseModel):
    """Long-context tier: above this many input tokens, these prices apply to the whole call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    above_input_tokens: int = Field(gt=0)
    input: PriceStr
    output: PriceStr
    cache_read: PriceStr | None = None
    cache_write: PriceStr | None = None
    reasoning: PriceStr | None = None


class PriceEntry(BaseModel):
    """One catalog entry: which models it prices, when, and at what rates (USD per 1M tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1)]
    provider: Annotated[str, StringConstraints(min_length=1)]
    match: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    platforms: list[str] = Field(default_factory=list)
    effective_from: date
    effective_to: date | None = None
    input: PriceStr
    output: PriceStr
    cache_read: PriceStr | None = None
    cache_write: PriceStr | None = None
    reasoning: PriceStr | None = None
    tiers: list[Tier] = Field(default_factory=list)
    # Where the price comes from: a URL, or free text for a contract or a self-hosted model's own cost.
    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    checked: date
    # Why this entry exists beside the base price database (required in the project's own catalog).
    reason: str = ""
    # Only for calls whose deployment key (processors.core.deployment: "aws:us-gov", "azure:eu", ...)
    # matches a glob here.
    regions: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    # Only for calls whose service tier (OpenAI service_tier: default, flex, priority, batch) is listed here.
    service_tiers: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)

    @field_validator("match")
    @classmethod
    def _lower_patterns(cls, patterns: list[str]) -> list[str]:
        return [p.strip().lower() for p in patterns]

    @field_validator("regions", "service_tiers")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    @field_validator("platforms")
    @classmethod
    def _canonical_platforms(cls, platforms: list[str]) -> list[str]:
        return [normalize_provider(p) for p in platforms]


_MULTIPLIER_RE: Final = re.compile(r"^\d+(\.\d+)?(/\d+)?$")


class Uplift(BaseModel):
    """A deployment surcharge on base prices: the base's price of the matched entries times `multiplier`.

    For prices that differ only by where a call runs (Azure data zones, Bedrock GovCloud,
    Vertex regional endpoints), one rule instead of a copy of every model's price.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(min_length=1)]
    platforms: list[str] = Field(min_length=1)
    regions: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    # Globs over the base entry the call resolved to, e.g. "base:openai/*".
    base_entries: list[Annotated[str, StringConstraints(min_length=1)]] = Field(min_length=1)
    multiplier: str  # a decimal ("1.1") or an exact fraction ("12/11")
    effective_from: date
    effective_to: date | None = None
    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    checked: date
    reason: str = ""

    @field_validator("multiplier")
    @classmethod
    def _exact_multiplier(cls, value: str) -> str:
        if not isinstance(value, str) or not _MULTIPLIER_RE.match(value.strip()):
            raise ValueError(f'multiplier {value!r}: need a quoted decimal ("1.1") or fraction ("12/11")')
        return value.strip()

    @field_validator("platforms")
    @classmethod
    def _canonical_platforms(cls, platforms: list[str]) -> list[str]:
        return [normalize_provider(p) for p in platforms]

    @field_validator("regions", "base_entries")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    def fraction(self) -> Fraction:
        return Fraction(self.multiplier)

    def applies(self, platform: str, region: str, entry: str, at: date) -> bool:
        return (
            platform in self.platforms
            and any(fnmatchcase(region, pattern) for pattern in self.regions)
            and any(fnmatchcase(entry, pattern) for pattern in self.base_entries)
            and self.effective_from <= at
            and (self.effective_to is None or at < self.effective_to)
        )


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = ""
    # Exact model-id aliases (e.g. Azure deployment names) -> a model id the entries match.
    aliases: dict[str, str] = Field(default_factory=dict)
    entries: list[PriceEntry] = Field(default_factory=list)
    uplifts: list[Uplift] = Field(default_factory=list)


def _micro(price: str | None, fallback: int) -> int:
    """Price per 1M tokens as integer micro-USD (exact: at most 6 decimals, validated)."""
    if price is None:
        return fallback
    return int(Decimal(price).scaleb(6))


@dataclass(frozen=True, slots=True)
class _Rates:
    """Integer micro-USD per 1M tokens == pico-USD per token."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int | None  # None: reasoning billed as output


def _rates(input: str, output: str, cache_read: str | None, cache_write: str | None, reasoning: str | None) -> _Rates:
    inp = _micro(input, 0)
    return _Rates(
        input=inp,
        output=_micro(output, 0),
        cache_read=_micro(cache_read, inp),
        cache_write=_micro(cache_write, inp),
        reasoning=None if reasoning is None else _micro(reasoning, 0),
    )


@dataclass(frozen=True, slots=True)
class _Rule:
    """A compiled entry: window in Unix ns, base rates, tiers (threshold, rates) high to low, rank."""

    entry: PriceEntry
    from_ns: int
    to_ns: int
    base: _Rates
    tiers: tuple[tuple[int, _Rates], ...]
    rank: tuple[
        int, ...
    ]  # (user file index, platform-, region-, tier-specific, -order); the pattern's rank goes before -order
    user: bool

    def rates_for(self, input_tokens: int) -> _Rates:
        for threshold, rates in self.tiers:
            if input_tokens > threshold:
                return rates
        return self.base


def _applies(entry: PriceEntry, region: str, tier: str) -> bool:
    if entry.regions and not any(fnmatchcase(region, pattern) for pattern in entry.regions):
        return False
    return not entry.service_tiers or tier in entry.service_tiers


def _day_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9


def _pattern_rank(pattern: str) -> tuple[int, int]:
    is_glob = any(ch in pattern for ch in "*?[")
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (0 if is_glob else 1, literal)


def canonical_model(model: str) -> str:
    """Model id without provider/path prefixes, Bedrock region/vendor/version parts; Vertex '@' -> '-'."""
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    if "@" in name:
        name = name.replace("@", "-")
    if "." in name:
        name = _BEDROCK_REGION_RE.sub("", name, count=1)
        name = _BEDROCK_VENDOR_RE.sub("", name, count=1)
    if ":" in name:
        name = _BEDROCK_VERSION_RE.sub("", name, count=1)
    return name


def cost_pico(
    rates: _Rates, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int
) -> int:
    uncached = input_tokens - cache_read - cache_write
    if uncached < 0:
        uncached = 0
    total = uncached * rates.input + cache_read * rates.cache_read + cache_write * rates.cache_write
    if rates.reasoning is None:
        total += output_tokens * rates.output
    else:
        visible = output_tokens - reasoning
        total += (visible if visible > 0 else 0) * rates.output + reasoning * rates.reasoning
    return total


def _compile(entry: PriceEntry, user: bool, order: int) -> _Rule:
    base = _rates(entry.input, entry.output, entry.cache_read, entry.cache_write, entry.reasoning)
    tiers = tuple(
        sorted(
            (
                (t.above_input_tokens, _rates(t.input, t.output, t.cache_read, t.cache_write, t.reasoning))
                for t in entry.tiers
            ),
            key=lambda item: -item[0],
        )
    )
    return _Rule(
        entry=entry,
        from_ns=_day_ns(entry.effective_from),
        to_ns=_day_ns(entry.effective_to) if entry.effective_to else _FAR_FUTURE_NS,
        base=base,
        tiers=tiers,
        rank=(
            1 if user else 0,
            1 if entry.platforms else 0,
            1 if entry.regions else 0,
            1 if entry.service_tiers else 0,
            -order,
        ),
        user=user,
    )


def load_catalog_file(path: Path | str | None = None) -> _CatalogFile:
    """Parse one catalog YAML (the packaged one when `path` is None); raise PricingError on any problem."""
    try:
        if path is None:
            text = files("schemas.pricing").joinpath(DEFAULT_CATALOG).read_text(encoding="utf-8")
            where = f"schemas/pricing/{DEFAULT_CATALOG}"
        else:
            text = Path(path).read_text(encoding="utf-8")
            where = str(path)
        data = yaml.safe_load(text) or {}
        parsed = _CatalogFile.model_validate(data)
    except ValidationError as exc:
        # One line a user can act on: where in the file, and what is wrong there.
        first = exc.errors()[0]
        at = ".".join(str(part) for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PricingError(f"pricing catalog {path or DEFAULT_CATALOG}: {at}: {first['msg']}{more}") from exc
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise PricingError(f"pricing catalog {path or DEFAULT_CATALOG}: {' '.join(str(exc).split())}") from exc
    ids = [e.id for e in parsed.entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PricingError(f"pricing catalog {where}: duplicate entry ids {duplicates}")
    for entry in parsed.entries:
        if entry.effective_to is not None and entry.effective_to <= entry.effective_from:
            raise PricingError(f"pricing catalog {where}: entry {entry.id}: effective_to must be after effective_from")
    return parsed


@dataclass(frozen=True, slots=True)
class MatchExplanation:
    """Why a model id resolves to an entry (or to none): for `llmops pricing check MODEL`."""

    model: str
    provider: str
    at: datetime
    candidates: tuple[str, ...]  # the ids tried: raw lower-case, alias target, canonical
    matched: tuple[tuple[str, str, str], ...]  # (entry id, pattern that matched, why it was (not) chosen)
    chosen: PriceEntry | None

    def render(self, conclusion: bool = True) -> str:
        """The explanation; without `conclusion` the caller (which knows the base layer too) concludes."""
        lines = [f"model {self.model!r} provider {self.provider!r} at {self.at.isoformat()}"]
        lines.append("  ids tried: " + ", ".join(repr(c) for c in self.candidates))
        for entry_id, pattern, why in self.matched:
            lines.append(f"  {entry_id}: pattern {pattern!r}: {why}")
        if not conclusion:
            return "\n".join(lines)
        if self.chosen is None:
            lines.append("  -> unpriced: cost is NULL")
        else:
            e = self.chosen
            lines.append(
                f"  -> {e.id} (input {e.input}, output {e.output}, cache_read {e.cache_read or e.input}, "
                f"cache_write {e.cache_write or e.input} USD/1M tokens; source {e.source}, checked {e.checked})"
            )
        return "\n".join(lines)


@dataclass(slots=True)
class PricingCatalog:
    """Compiled entries (package catalog + user files) with a per-(provider, model) lookup cache.

    The cache is owned by this object (one per stage worker), keyed by the raw
    strings seen on spans, so each distinct model id is resolved once.
    """

    rules: list[_Rule]
    aliases: dict[str, str] = field(default_factory=dict)
    version: str = ""
    # (uplift, from a user file), user files' first (later files first), then the project's.
    uplifts: list[tuple[Uplift, bool]] = field(default_factory=list)
    _cache: dict[tuple[str, str], tuple[_Rule, ...]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, user_files: Sequence[Path | str] = (), include_default: bool = True) -> PricingCatalog:
        """The packaged catalog plus user files; later user files win over earlier ones."""
        rules: list[_Rule] = []
        aliases: dict[str, str] = {}
        version = ""
        order = 0
        uplifts: list[tuple[Uplift, bool]] = []
        sources: list[tuple[_CatalogFile, bool]] = []
        if include_default:
            sources.append((load_catalog_file(None), False))
        for path in user_files:
            sources.append((load_catalog_file(path), True))
        for index, (parsed, user) in enumerate(sources):
            if not user:
                version = parsed.version
            for alias, target in parsed.aliases.items():
                aliases[alias.strip().lower()] = target.strip().lower()
            uplifts[:0] = [(u, user) for u in parsed.uplifts]
            for entry in parsed.entries:
                # Later files rank above earlier ones: fold the file index into the user flag.
                rule = _compile(entry, user=user, order=order)
                rank = (index + 1 if user else 0, *rule.rank[1:])
                rules.append(_Rule(rule.entry, rule.from_ns, rule.to_ns, rule.base, rule.tiers, rank, user))
                order += 1
        return cls(rules=rules, aliases=aliases, version=version, uplifts=uplifts)

    def uplift_for(self, platform: str, region: str, entry: str, at: date) -> tuple[Uplift, bool] | None:
        """The surcharge rule for a base-priced call, if any (user files' rules first)."""
        for uplift, user in self.uplifts:
            if uplift.applies(platform, region, entry, at):
                return uplift, user
        return None

    # -- lookup -------------------------------------------------------------------------------

    def candidates(self, model: str) -> tuple[str, ...]:
        """The ids a model id is matched as: raw lower-case, alias targets, canonical forms."""
        raw = model.strip().lower()
        out = [raw]
        alias = self.aliases.get(raw)
        if alias:
            out.append(alias)
        for name in list(out):
            canon = canonical_model(name)
            if canon not in out:
                out.append(canon)
            alias = self.aliases.get(canon)
            if alias and alias not in out:
                out.append(alias)
                canon2 = canonical_model(alias)
                if canon2 not in out:
                    out.append(canon2)
        return tuple(out)

    def _matching(self, model: str, provider: str) -> tuple[_Rule, ...]:
        key = (provider, model)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        platform = normalize_provider(provider) if provider else ""
        candidates = self.candidates(model)
        ranked: list[tuple[tuple[int, ...], _Rule]] = []
        for rule in self.rules:
            if rule.entry.platforms and platform not in rule.entry.platforms:
                continue
            hits = [_pattern_rank(p) for p in rule.entry.match if any(fnmatchcase(n, p) for n in candidates)]
            if hits:
                ranked.append(((*rule.rank[:4], *max(hits), rule.rank[4]), rule))
        ranked.sort(key=lambda item: item[0], reverse=True)
        result = tuple(rule for _, rule in ranked)
        if len(self._cache) >= _MATCH_CACHE_MAX:  # keyed by model ids off the wire: bounded
            self._cache.clear()
        self._cache[key] = result
        return result

    def rule(self, model: str, provider: str, at_ns: int, region: str = "", tier: str = "") -> _Rule | None:
        """The compiled rule pricing `model` (called through `provider`, deployment `region`, service `tier`)
        at `at_ns`, or None."""
        if not model:
            return None
        for rule in self._matching(model, provider):
            if rule.from_ns <= at_ns < rule.to_ns and _applies(rule.entry, region, tier):
                return rule
        return None

    # -- explanation --------------------------------------------------------------------------

    def check(
        self, model: str, provider: str = "", at: datetime | date | None = None, region: str = "", tier: str = ""
    ) -> MatchExplanation:
        """Which entry prices `model` at `at` (default: now, UTC) and why the others do not."""
        if at is None:
            when = datetime.now(UTC)
        elif isinstance(at, datetime):
            when = at if at.tzinfo else at.replace(tzinfo=UTC)
        else:
            when = datetime(at.year, at.month, at.day, tzinfo=UTC)
        at_ns = int(when.timestamp()) * 10**9
        platform = normalize_provider(provider) if provider else ""
        candidates = self.candidates(model)
        chosen = self.rule(model, provider, at_ns, region, tier)
        matched: list[tuple[str, str, str]] = []
        for rule in self.rules:
            pattern = next(
                (p for p in rule.entry.match for name in candidates if fnmatchcase(name, p)),
                None,
            )
            if pattern is None:
                continue
            entry = rule.entry
            if entry.platforms and platform not in entry.platforms:
                why = f"not used: only for platforms {entry.platforms}"
            elif not _applies(entry, region, tier):
                why = (
                    f"not used: only for regions {entry.regions or 'any'} / "
                    f"service tiers {entry.service_tiers or 'any'}"
                )
            elif not rule.from_ns <= at_ns < rule.to_ns:
                why = f"not used: effective {entry.effective_from} .. {entry.effective_to or 'now'}"
            elif chosen is not None and rule is chosen:
                why = (
                    "CHOSEN: "
                    + ("user file, " if rule.user else "project catalog, ")
                    + ("platform-specific, " if entry.platforms else "")
                    + ("exact id" if _pattern_rank(pattern)[0] else "glob pattern")
                )
            else:
                why = "not used: outranked by " + (chosen.entry.id if chosen else "?")
            matched.append((entry.id, pattern, why))
        return MatchExplanation(
            model=model,
            provider=provider,
            at=when,
            candidates=candidates,
            matched=tuple(matched),
            chosen=chosen.entry if chosen else None,
        )

    def entries(self) -> list[PriceEntry]:
        return [rule.entry for rule in self.rules]
