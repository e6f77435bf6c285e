"""`llmops pricing check|unpriced|coverage|update` and `llmops budgets`: explain prices, list gaps, refresh the base.

Imports of the store and the pricer stay inside the commands so that `llmops --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmops.config import Settings

__all__ = [
    "add_pricing_parser",
    "run_pricing",
    "pricing_check",
    "pricing_unpriced",
    "pricing_coverage",
    "pricing_update",
    "pricing_reprice",
    "budgets_report",
    "UNPRICED_SQL",
    "COVERAGE_SQL",
    "UNPRICED_BY_TOKENS_SQL",
]

UNPRICED_SQL = """
SELECT provider, model, count() AS calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       min(ts) AS first_seen, max(ts) AS last_seen
FROM llm_calls WHERE cost IS NULL AND status = 'ok' AND model != ''
GROUP BY provider, model ORDER BY calls DESC
"""

# Share of calls and tokens priced, by the layer that priced them and by provider.
COVERAGE_SQL = """
SELECT provider, if(cost IS NULL, 'unpriced', pricing_source) AS source,
       count() AS calls, sum(input_tokens + output_tokens) AS tokens,
       round(100 * calls / sum(calls) OVER (PARTITION BY provider), 2) AS pct_calls_of_provider,
       round(100 * tokens / sum(tokens) OVER (PARTITION BY provider), 2) AS pct_tokens_of_provider
FROM llm_calls WHERE ts >= {since:DateTime64(9, 'UTC')} AND status = 'ok'
GROUP BY provider, source ORDER BY provider, source
"""

UNPRICED_BY_TOKENS_SQL = """
SELECT provider, model, count() AS calls, sum(input_tokens + output_tokens) AS tokens
FROM llm_calls WHERE ts >= {since:DateTime64(9, 'UTC')} AND status = 'ok' AND cost IS NULL AND model != ''
GROUP BY provider, model ORDER BY tokens DESC, calls DESC LIMIT 50
"""

_HOW_TO_PRICE = """\
  How to price it: add an entry to your pricing file (--pricing-file / LLMOPS_PROCESSOR__PRICING_FILE),
  picked up by running workers within processor.pricing_reload_s:
    entries:
      - id: mine/{slug}
        provider: {provider}
        match: ["{model}"]
        effective_from: "{today}"
        input: "0.50"      # USD per 1M input tokens, quoted
        output: "1.50"     # USD per 1M output tokens, quoted
        source: "where the price comes from (URL, contract, or our GPU cost)"
        checked: "{today}"
  or map it to a model that has a price:  aliases: {{"{model}": "gpt-4o-mini"}}
  Format: docs/pricing.md. Calls already stored without a price stay NULL (see `llmops pricing unpriced`)."""


def add_pricing_parser(commands: Any, add_flags: Callable[..., None], common: list[tuple[str, str, type]]) -> None:
    """The `pricing` command and its subcommands (called by llmops.cli.build_parser)."""
    pricing = commands.add_parser(
        "pricing", help="Explain prices; list unpriced models; coverage; refresh the base prices."
    )
    sub = pricing.add_subparsers(dest="pricing_command", required=True, metavar="SUBCOMMAND")
    files = [
        ("--pricing-file", "processor.pricing_file", Path),
        ("--pricing-snapshot-file", "processor.pricing_snapshot_file", Path),
        ("--data-dir", "data_dir", Path),
    ]
    check = sub.add_parser("check", help="Which layer and entry price MODEL, and why; how to price it if nothing does.")
    add_flags(check, files)
    check.add_argument(
        "model", help="Model id as spans carry it (e.g. gpt-4o-2024-08-06, us.anthropic.claude-sonnet-4-...)."
    )
    check.add_argument("--provider", default="", help="Provider name (gen_ai.provider.name), to disambiguate.")
    check.add_argument("--at", default=None, help="Date (YYYY-MM-DD) the price applies to; default today.")
    check.add_argument("--region", default="", help="Deployment key, e.g. aws:us-gov, azure:eu, gcp:us-east5.")
    check.add_argument("--tier", default="", help="Service tier: flex, priority, batch (default: standard).")
    unpriced = sub.add_parser("unpriced", help="Models seen without a price, with their token volumes.")
    add_flags(unpriced, [*common, ("--sql-port", "sql.port", int)])
    unpriced.add_argument("--json", action="store_true", help="Print JSON.")
    coverage = sub.add_parser(
        "coverage", help="Share of stored calls and tokens priced, by source and provider; unpriced models by tokens."
    )
    add_flags(coverage, [*common, ("--sql-port", "sql.port", int)])
    coverage.add_argument("--since", default="1970-01-01", help="Only calls at or after this UTC time (ISO 8601).")
    coverage.add_argument("--json", action="store_true", help="Print JSON.")
    update = sub.add_parser(
        "update",
        help="Refresh the base price snapshot from a genai-prices data JSON file or URL "
        "(explicit; workers never fetch).",
    )
    add_flags(update, files)
    update.add_argument("--from", dest="source", required=True, help="Path or http(s) URL of a genai-prices data.json.")
    update.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for a URL.")
    reprice = sub.add_parser(
        "reprice",
        help="Price stored calls again (cost NULL, or all of --model after a correction); window aggregates follow.",
    )
    add_flags(reprice, common + files[:2] + [("--sql-port", "sql.port", int)])
    reprice.add_argument("--since", required=True, help="First UTC time to reprice (ISO 8601, e.g. 2026-11-01).")
    reprice.add_argument(
        "--model", default=None, help="Reprice every call of this model (billed model id), not only unpriced ones."
    )


def run_pricing(settings: Settings, args: argparse.Namespace) -> int:
    from llmops.errors import UsageError
    from processors.core.pricing import PricingError

    try:
        return _run(settings, args)
    except PricingError as exc:  # a pricing file the user can fix: one line (llmops.cli.main prints it), exit 2
        raise UsageError(" ".join(str(exc).split())) from exc


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.pricing_command == "check":
        print(pricing_check(settings, args))
    elif args.pricing_command == "unpriced":
        print(pricing_unpriced(settings, args.json))
    elif args.pricing_command == "coverage":
        print(pricing_coverage(settings, args.since, args.json))
    elif args.pricing_command == "update":
        print(pricing_update(settings, args.source, args.timeout))
    else:
        print(pricing_reprice(settings, args.since, args.model))
    return 0


def _pricer(settings: Settings) -> Any:
    from processors.stages import build_pricer

    return build_pricer(settings)


def pricing_check(settings: Settings, args: argparse.Namespace) -> str:
    from processors.core.normalize import normalize_provider

    when = _since(args.at, "check") if args.at else datetime.now(UTC)
    provider = normalize_provider(args.provider) if args.provider else ""
    pricer = _pricer(settings)
    lines = [pricer.catalog.check(args.model, provider, when, args.region, args.tier.lower()).render(conclusion=False)]
    at_ns = int(when.timestamp()) * 10**9
    resolution = pricer.resolve(
        provider, (args.model,), args.region, args.tier.lower(), True, at_ns - at_ns % (86_400 * 10**9)
    )
    if resolution is None:
        lines.append(
            f"  -> unpriced: no user entry, project entry or base price ({pricer.version}) matches: cost is NULL"
        )
        slug = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in args.model.lower()).strip("-")
        lines.append(
            _HOW_TO_PRICE.format(
                model=args.model, provider=provider or "self-hosted", slug=slug, today=when.date().isoformat()
            )
        )
    else:
        rates = resolution.base

        def usd(micro: int) -> str:  # micro-USD per 1M tokens -> USD per 1M tokens, exact
            return format(Decimal(micro).scaleb(-6).normalize(), "f")

        lines.append(
            f"  -> {resolution.source}: {resolution.entry} (input {usd(rates.input)}, output {usd(rates.output)}, "
            f"cache_read {usd(rates.cache_read)}, cache_write {usd(rates.cache_write)} USD/1M tokens"
            + (f"; {len(resolution.tiers)} long-context tier(s)" if resolution.tiers else "")
            + f"; base snapshot {pricer.version})"
        )
        if resolution.assumption:
            lines.append(f"  assumed: {resolution.assumption}")
    return "\n".join(lines)


def pricing_unpriced(settings: Settings, as_json: bool) -> str:
    from llmops.report import render_table
    from llmops.store import open_reader

    result = open_reader(settings).query(UNPRICED_SQL)
    rows = [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
    if as_json:
        return json.dumps(rows, indent=2, default=str)
    if not rows:
        return "every model seen has a price"
    return (
        render_table("Unpriced models seen", rows)
        + "Price them in a pricing file: `llmops pricing check MODEL` shows how."
    )


def pricing_coverage(settings: Settings, since: str, as_json: bool) -> str:
    from llmops.report import render_table
    from llmops.store import open_reader

    start = _since(since, "coverage")
    client = open_reader(settings)
    by_source = client.query(COVERAGE_SQL, parameters={"since": start})
    unpriced = client.query(UNPRICED_BY_TOKENS_SQL, parameters={"since": start})
    sources = [dict(zip(by_source.column_names, row, strict=True)) for row in by_source.result_rows]
    models = [dict(zip(unpriced.column_names, row, strict=True)) for row in unpriced.result_rows]
    calls = sum(r["calls"] for r in sources)
    tokens = sum(r["tokens"] for r in sources)
    priced_calls = sum(r["calls"] for r in sources if r["source"] != "unpriced")
    priced_tokens = sum(r["tokens"] for r in sources if r["source"] != "unpriced")
    summary = {
        "calls": calls,
        "tokens": tokens,
        "priced_calls_pct": round(100 * priced_calls / calls, 2) if calls else None,
        "priced_tokens_pct": round(100 * priced_tokens / tokens, 2) if tokens else None,
    }
    if as_json:
        return json.dumps(
            {"summary": summary, "by_provider_and_source": sources, "unpriced_models": models}, indent=2, default=str
        )
    if not calls:
        return "no calls stored yet"
    head = (
        f"{summary['priced_calls_pct']}% of {calls} calls and {summary['priced_tokens_pct']}% of {tokens} tokens "
        "are priced\n\n"
    )
    out = head + render_table("Calls by provider and price source", sources)
    if models:
        out += (
            render_table("Unpriced models, most tokens first", models)
            + "Price one: `llmops pricing check MODEL` shows how."
        )
    return out


def _since(text: str, command: str) -> datetime:
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise SystemExit(
            f"llmops pricing {command}: {text!r} is not an ISO 8601 time (e.g. 2026-11-01 or 2026-11-01T12:00)"
        ) from None


def pricing_reprice(settings: Settings, since: str, model: str | None) -> str:
    """Writes go to the store itself: see llmops.reprice for why and how."""
    from llmops.reprice import RepriceError, reprice
    from llmops.store import endpoint_alive, local_host
    from sinks.clickhouse.client import connect

    start = _since(since, "reprice")
    if settings.embedded_store and endpoint_alive(local_host(settings.receiver.listen), settings.sql.port):
        raise SystemExit(
            f"llmops pricing reprice: a stack is serving {settings.data_dir} (its SQL endpoint is read-only): "
            "stop `llmops up` first, then run reprice again"
        )
    if settings.embedded_store and not (settings.data_dir / "clickhouse").exists():
        raise SystemExit(f"llmops pricing reprice: no store in {settings.data_dir} yet: nothing to reprice")
    client = connect(settings.clickhouse_dsn, settings.clickhouse.database)
    try:
        return reprice(client, _pricer(settings), start, model).render()
    except RepriceError as exc:
        raise SystemExit(f"llmops pricing reprice: {exc}") from None
    finally:
        client.close()


def _fetch(source: str, timeout: float) -> bytes:
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as response:  # explicit, user-given URL only
                return response.read()
        except OSError as exc:
            raise SystemExit(f"llmops pricing update: cannot fetch {source}: {exc}") from None
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise SystemExit(f"llmops pricing update: cannot read {source}: {exc.strerror}") from None


def pricing_update(settings: Settings, source: str, timeout: float = 30.0) -> str:
    """Validate a snapshot, then atomically replace the one workers read (they reload it by themselves)."""
    from processors.core.price_base import BaseSnapshot
    from processors.core.pricer import describe_changes
    from processors.stages import pricer_sources

    target = pricer_sources(settings).snapshot
    assert target is not None
    data = _fetch(source, timeout)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".pricing-snapshot.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        try:
            new = BaseSnapshot.from_file(tmp)
        except ValueError as exc:
            raise SystemExit(f"llmops pricing update: {str(exc).replace(str(tmp), source)}") from None
        old = _pricer(settings)
        changes = describe_changes(old.catalog, old.base, old.catalog, new)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return (
        f"base prices {new.version} ({new.model_count()} models) written to {target}; "
        "running workers pick it up by themselves\n" + ("; ".join(changes) if changes else "no price changed")
    )


def budgets_report(settings: Settings, budgets_file: Path | None, as_json: bool) -> str:
    from llmops.store import open_reader
    from processors.budget_monitor import compute_status
    from processors.core.budgets import load_budgets

    path = budgets_file or settings.processor.budgets_file
    if path is None:
        raise SystemExit("llmops budgets: give --budgets FILE (or LLMOPS_PROCESSOR__BUDGETS_FILE)")
    statuses = compute_status(open_reader(settings), load_budgets(path))
    if as_json:
        return json.dumps([{k: getattr(s, k) for k in s.__dataclass_fields__} for s in statuses], indent=2, default=str)
    lines = [
        f"{'budget':<20} {'scope':<26} {'period':<6} {'spend':>14} {'amount':>12} {'used':>7} {'projected':>14}  status"
    ]
    for s in statuses:
        lines.append(
            f"{s.budget_id:<20} {s.scope_kind + '=' + s.scope_value:<26} {s.period:<6} "
            f"{s.spend:>14.4f} {s.amount:>12.2f} {s.fraction:>6.1%} {s.projected:>14.4f}  {s.status}"
        )
    return "\n".join(lines)
