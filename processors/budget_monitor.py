"""Budget status from the store: spend per budget scope and period, read from llm_usage_1m and llm_calls.

The worker runs `refresh` on a timer and writes the rows to `budget_status`
(ReplacingMergeTree: the newest computation per budget and period wins);
`llmops budgets` runs the same function and prints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from processors.core.budgets import BudgetsFile, BudgetStatus, Period, budget_status, period_bounds

__all__ = ["current_spend", "user_spend", "compute_status"]


def current_spend(client: Client, budgets: BudgetsFile, now: datetime) -> dict[tuple[str, Period], Decimal]:
    """Exact Decimal spend so far in each budget's day and month (unpriced calls add nothing)."""
    spend: dict[tuple[str, Period], Decimal] = {}
    users = [budget for budget in budgets.budgets if budget.scope_kind == "user"]
    if users:
        per_user = user_spend(client, {budget.scope_value for budget in users}, now)
        for budget in users:
            day, month = per_user.get(budget.scope_value, (Decimal(0), Decimal(0)))
            for period, _amount in budget.amounts():
                spend[(budget.id, period)] = day if period == "day" else month
    for budget in budgets.budgets:
        if budget.scope_kind == "user":
            continue
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


def user_spend(client: Client, users: set[str], now: datetime) -> dict[str, tuple[Decimal, Decimal]]:
    """Exact (today, this month) spend of each user that has calls, from llm_calls in one query.

    The query reads the month so far once, whatever the number of user budgets; a user without a
    priced call in the month is absent (spend 0)."""
    day_start, _ = period_bounds("day", now)
    month_start, _ = period_bounds("month", now)
    result = client.query(
        "SELECT user_id, toString(sumIf(cost, ts >= {day:DateTime64(9, 'UTC')})), toString(sum(cost)) "
        "FROM llm_calls WHERE user_id IN {users:Array(String)} AND cost IS NOT NULL "
        "AND ts >= {month:DateTime64(9, 'UTC')} AND ts <= {now:DateTime64(9, 'UTC')} GROUP BY user_id",
        parameters={
            "users": sorted(users),
            "day": day_start.replace(tzinfo=None),
            "month": month_start.replace(tzinfo=None),
            "now": now.astimezone(UTC).replace(tzinfo=None),
        },
    )
    return {user: (Decimal(day), Decimal(month)) for user, day, month in result.result_rows}


def compute_status(client: Client, budgets: BudgetsFile, now: datetime | None = None) -> list[BudgetStatus]:
    now = now or datetime.now(UTC)
    return budget_status(budgets, current_spend(client, budgets, now), now)
