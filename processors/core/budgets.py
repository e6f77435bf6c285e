"""Budgets: a YAML file of spend limits, and a pure function from spend-so-far to budget status.

File format (unknown keys are errors; amounts are quoted decimal strings, USD)::

    budgets:
      - id: search-team
        scope: {team: search}          # exactly one of: team, environment, service, model, user
        per_day: "50.00"               # optional
        per_month: "1200.00"           # optional (at least one of per_day / per_month)
        warn_fraction: "0.8"           # optional, default 0.8
      - id: user-42
        scope: {user: "42"}            # one end user (llm_calls.user_id: user.id, enduser.id, ...)
        per_day: "2.00"
    projection_min_elapsed: "0.1"      # optional: projections warn only after this fraction of a period

Periods are UTC calendar days and months. Status per budget and period:
``exceeded`` when spend >= amount; ``warn`` when spend >= warn_fraction * amount, or
when the projected end-of-period spend (spend / elapsed * period length, the current
burn rate) exceeds the amount once `projection_min_elapsed` of the period has
passed (earlier projections extrapolate a handful of calls); ``ok`` otherwise.
All money is Decimal; `fraction` is a float for display only.

Spend of a `user` budget is summed from `llm_calls` (the usage partials have no user dimension: a row
per user there is what the top-spenders state avoids); the other scopes from `llm_usage_1m`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from processors.core.errors import PermanentError
from processors.core.tables import TableRows

__all__ = [
    "BudgetError",
    "Budget",
    "BudgetsFile",
    "BudgetStatus",
    "Period",
    "ScopeKind",
    "BUDGET_STATUS_COLUMNS",
    "load_budgets",
    "period_bounds",
    "budget_status",
    "budget_status_rows",
]

Period = Literal["day", "month"]
ScopeKind = Literal["team", "environment", "service", "model", "user"]
_Q12: Final = Decimal(1).scaleb(-12)
BUDGET_STATUS_COLUMNS: Final = (
    "computed_at",
    "budget_id",
    "scope_kind",
    "scope_value",
    "period",
    "period_start",
    "period_end",
    "amount",
    "spend",
    "fraction",
    "projected",
    "warn_fraction",
    "status",
)


class BudgetError(PermanentError, ValueError):
    """The budgets file is malformed."""


def _decimal_str(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be a quoted decimal string (YAML numbers are floats, inexact)")
    result = Decimal(value.strip())
    if not result.is_finite() or result < 0:
        raise ValueError(f"{value!r} must be a finite, non-negative decimal")
    return result


Money = Annotated[Decimal, BeforeValidator(_decimal_str)]


class Budget(BaseModel):
    """One spend limit on one scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1)]
    scope: dict[ScopeKind, str] = Field(min_length=1, max_length=1)
    per_day: Money | None = None
    per_month: Money | None = None
    warn_fraction: Money = Decimal("0.8")

    @model_validator(mode="after")
    def _has_amount(self) -> Budget:
        if self.per_day is None and self.per_month is None:
            raise ValueError(f"budget {self.id}: set per_day and/or per_month")
        if not Decimal(0) < self.warn_fraction <= Decimal(1):
            raise ValueError(f"budget {self.id}: warn_fraction must be in (0, 1]")
        return self

    @property
    def scope_kind(self) -> str:
        return next(iter(self.scope))

    @property
    def scope_value(self) -> str:
        return next(iter(self.scope.values()))

    def amounts(self) -> list[tuple[Period, Decimal]]:
        out: list[tuple[Period, Decimal]] = []
        if self.per_day is not None:
            out.append(("day", self.per_day))
        if self.per_month is not None:
            out.append(("month", self.per_month))
        return out


class BudgetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    budgets: list[Budget] = Field(default_factory=list)
    projection_min_elapsed: Money = Decimal("0.1")

    @model_validator(mode="after")
    def _unique_ids(self) -> BudgetsFile:
        ids = [b.id for b in self.budgets]
        if len(ids) != len(set(ids)):
            raise ValueError(f"duplicate budget ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        return self


def load_budgets(path: Path | str) -> BudgetsFile:
    """Parse and validate a budgets YAML file; raise BudgetError with the reason."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return BudgetsFile.model_validate(data)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise BudgetError(f"budgets file {path}: {exc}") from exc


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or calendar month holding `now` (aware datetimes)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    computed_at: datetime
    budget_id: str
    scope_kind: str
    scope_value: str
    period: Period
    period_start: datetime
    period_end: datetime
    amount: Decimal
    spend: Decimal
    fraction: float
    projected: Decimal
    warn_fraction: Decimal
    status: str  # ok | warn | exceeded


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def budget_status(
    budgets: BudgetsFile,
    spend: Mapping[tuple[str, Period], Decimal],
    now: datetime,
) -> list[BudgetStatus]:
    """Status of every budget and period from spend so far (keyed (budget id, period)); pure."""
    out: list[BudgetStatus] = []
    min_elapsed = budgets.projection_min_elapsed
    for budget in budgets.budgets:
        for period, amount in budget.amounts():
            start, end = period_bounds(period, now)
            spent = spend.get((budget.id, period), Decimal(0))
            elapsed = _micros(now.astimezone(UTC) - start)
            total = _micros(end - start)
            projected = spent if elapsed <= 0 else (spent * total / elapsed)
            projected = projected.quantize(_Q12)
            if spent >= amount:
                status = "exceeded"
            elif spent >= budget.warn_fraction * amount or (
                projected > amount and Decimal(elapsed) >= min_elapsed * total
            ):
                status = "warn"
            else:
                status = "ok"
            fraction = float(spent / amount) if amount > 0 else (float("inf") if spent > 0 else 0.0)
            out.append(
                BudgetStatus(
                    computed_at=now,
                    budget_id=budget.id,
                    scope_kind=budget.scope_kind,
                    scope_value=budget.scope_value,
                    period=period,
                    period_start=start,
                    period_end=end,
                    amount=amount,
                    spend=spent.quantize(_Q12),
                    fraction=fraction,
                    projected=projected,
                    warn_fraction=budget.warn_fraction,
                    status=status,
                )
            )
    return out


def budget_status_rows(statuses: Sequence[BudgetStatus]) -> TableRows:
    """Columnar rows for `budget_status` (delivery columns added by the caller)."""
    rows = TableRows("budget_status", list(BUDGET_STATUS_COLUMNS))
    for status in statuses:
        for column, name in zip(rows.columns, BUDGET_STATUS_COLUMNS, strict=True):
            column.append(getattr(status, name))
    return rows
