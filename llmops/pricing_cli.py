"""`llmops pricing check|unpriced` and `llmops budgets`: explain prices, list gaps, show budget status."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from llmops.config import Settings
from llmops.report import render_table
from llmops.store import open_reader
from processors.budget_monitor import compute_status
from processors.budgets import load_budgets
from processors.pricing import PricingCatalog

__all__ = ["pricing_check", "pricing_unpriced", "budgets_report", "UNPRICED_SQL"]

UNPRICED_SQL = """
SELECT provider, model, count() AS calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       min(ts) AS first_seen, max(ts) AS last_seen
FROM llm_calls WHERE cost IS NULL AND status = 'ok' AND model != ''
GROUP BY provider, model ORDER BY calls DESC
"""


def _catalog(settings: Settings) -> PricingCatalog:
    return PricingCatalog.load([settings.processor.pricing_file] if settings.processor.pricing_file else [])


def pricing_check(settings: Settings, args: argparse.Namespace) -> str:
    at = datetime.fromisoformat(args.at).replace(tzinfo=timezone.utc) if args.at else None
    return _catalog(settings).check(args.model, args.provider or "", at).render()


def pricing_unpriced(settings: Settings, as_json: bool) -> str:
    result = open_reader(settings).query(UNPRICED_SQL)
    rows = [dict(zip(result.column_names, row)) for row in result.result_rows]
    if as_json:
        return json.dumps(rows, indent=2, default=str)
    if not rows:
        return "every model seen has a price"
    return render_table("Unpriced models seen", rows) + "Add prices for these in a pricing file (--pricing-file / LLMOPS_PROCESSOR__PRICING_FILE)."


def budgets_report(settings: Settings, budgets_file: Path | None, as_json: bool) -> str:
    path = budgets_file or settings.processor.budgets_file
    if path is None:
        raise SystemExit("llmops budgets: give --budgets FILE (or LLMOPS_PROCESSOR__BUDGETS_FILE)")
    statuses = compute_status(open_reader(settings), load_budgets(path))
    if as_json:
        return json.dumps([{k: getattr(s, k) for k in s.__dataclass_fields__} for s in statuses], indent=2, default=str)
    lines = [f"{'budget':<20} {'scope':<26} {'period':<6} {'spend':>14} {'amount':>12} {'used':>7} {'projected':>14}  status"]
    for s in statuses:
        lines.append(
            f"{s.budget_id:<20} {s.scope_kind + '=' + s.scope_value:<26} {s.period:<6} {s.spend:>14.4f} {s.amount:>12.2f} "
            f"{s.fraction:>6.1%} {s.projected:>14.4f}  {s.status}"
        )
    return "\n".join(lines)
