"""Budget status from the store: spend per budget scope and period, read from llm_usage_1m.

The worker runs `refresh` on a timer and writes the rows to `budget_status`
(ReplacingMergeTree: the newest computation per budget and period wins);
`llmops budgets` runs the same function and prints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from processors.core.budgets import BudgetsFile, BudgetStatus, Period, budget_status, period_bounds

__all__ = ["current_spend", "compute_status"]


def current_spend(client: Client, budgets: BudgetsFile, now: datetime) -> dict[tuple[str, Period], Decimal]:
    """Exact Decimal spend so far in each budget's day and month (unpriced calls add nothing)."""
    spend: dict[tuple[str, Period], Decimal] = {}
    for budget in budgets.budgets:
        for period, _amount in budget.amounts():
            start, _end = period_bounds(period, now)
            result = client.query(
                f"SELECT toString(sum(cost)) FROM llm_usage_1m WHERE {budget.scope_kind} = {{value:String}} "
                "AND window_start >= {start:DateTime} AND window_start <= {now:DateTime}",
                parameters={
                    "value": budget.scope_value,
                    "start": start.replace(tzinfo=None),
                    "now": now.replace(tzinfo=None),
                },
            )
            spend[(budget.id, period)] = Decimal(result.result_rows[0][0] or "0")
    return spend


def compute_status(client: Client, budgets: BudgetsFile, now: datetime | None = None) -> list[BudgetStatus]:
    now = now or datetime.now(UTC)
    return budget_status(budgets, current_spend(client, budgets, now), now)
