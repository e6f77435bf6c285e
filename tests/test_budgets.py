"""Budgets file parsing and status computation, against hand computations."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from processors.budget_monitor import current_spend, user_spend
from processors.core.budgets import BudgetError, Period, budget_status, budget_status_rows, load_budgets, period_bounds
from processors.core.records import LLMCall
from processors.core.rows import call_rows
from processors.core.usage import usage_rows

FILE = """
budgets:
  - id: search-team
    scope: {team: search}
    per_day: "50.00"
    per_month: "1000.00"
    warn_fraction: "0.8"
  - id: prod
    scope: {environment: prod}
    per_month: "300"
  - id: gpt4o
    scope: {model: gpt-4o}
    per_day: "10"
"""


@pytest.fixture
def budgets(tmp_path: Path):
    path = tmp_path / "budgets.yaml"
    path.write_text(FILE)
    return load_budgets(path)


def test_status_projection_and_thresholds(budgets) -> None:
    now = datetime(2026, 11, 10, 6, 0, tzinfo=UTC)  # 1/4 of the day, 9.25 of 30 days of November
    spend: dict[tuple[str, Period], Decimal] = {
        ("search-team", "day"): Decimal("12.5"),
        ("search-team", "month"): Decimal("850"),
        ("prod", "month"): Decimal("60"),
        ("gpt4o", "day"): Decimal("10"),
    }
    rows = {(s.budget_id, s.period): s for s in budget_status(budgets, spend, now)}
    day = rows[("search-team", "day")]
    assert (day.period_start, day.period_end) == (
        datetime(2026, 11, 10, tzinfo=UTC),
        datetime(2026, 11, 11, tzinfo=UTC),
    )
    assert day.projected == Decimal(50) and day.status == "ok"  # 12.5 * 4 == 50, not above the amount
    assert day.fraction == 0.25
    month = rows[("search-team", "month")]
    assert month.status == "warn"  # 850 >= 0.8 * 1000
    assert month.projected == (Decimal(850) * 30 * 24 / (9 * 24 + 6)).quantize(Decimal("1e-12"))
    prod = rows[("prod", "month")]
    assert prod.projected == (Decimal(60) * 720 / 222).quantize(Decimal("1e-12"))  # 194.59... < 300
    assert prod.status == "ok"
    assert rows[("gpt4o", "day")].status == "exceeded"
    assert len(budget_status_rows(list(rows.values()))) == 4


def test_projection_warns_only_after_min_elapsed(budgets) -> None:
    early = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)  # 2% of the day
    later = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)  # 1/6 of the day
    spend: dict[tuple[str, Period], Decimal] = {("gpt4o", "day"): Decimal("2")}
    assert {s.status for s in budget_status(budgets, spend, early) if s.budget_id == "gpt4o"} == {"ok"}
    [s] = [s for s in budget_status(budgets, spend, later) if s.budget_id == "gpt4o"]
    assert s.projected == Decimal(12) and s.status == "warn"


def test_spend_from_calls_respects_scope_period_and_unpriced(budgets, chdb_client: Client) -> None:
    """The worker's path: calls fold into llm_usage_1m rows, `current_spend` sums them per budget and period."""
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    ts = int(datetime(2026, 11, 10, 1, tzinfo=UTC).timestamp()) * 10**9
    old = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp()) * 10**9
    calls = [
        LLMCall(
            ts_ns=ts,
            trace_id="t",
            span_id="1",
            team="search",
            environment="prod",
            response_model="gpt-4o",
            cost=Decimal("1.25"),
        ),
        LLMCall(ts_ns=ts, trace_id="t", span_id="2", team="search", response_model="x", cost=None),
        LLMCall(
            ts_ns=old,
            trace_id="t",
            span_id="3",
            team="search",
            environment="prod",
            request_model="gpt-4o",
            cost=Decimal("2"),
        ),
        LLMCall(
            ts_ns=ts,
            trace_id="t",
            span_id="4",
            team="ads",
            environment="dev",
            response_model="gpt-4o",
            cost=Decimal("0.5"),
        ),
    ]
    rows = usage_rows(calls)
    chdb_client.insert(rows.table, rows.columns, column_names=rows.column_names, column_oriented=True)
    spend = current_spend(chdb_client, budgets, now)
    assert spend[("search-team", "day")] == Decimal("1.25")
    assert spend[("search-team", "month")] == Decimal("3.25")
    assert spend[("prod", "month")] == Decimal("3.25")
    assert spend[("gpt4o", "day")] == Decimal("1.75")


def test_period_bounds_december() -> None:
    start, end = period_bounds("month", datetime(2026, 12, 31, 23, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    [
        "budgets: [{id: a, scope: {team: x}, per_day: 5.0}]",  # float amount
        "budgets: [{id: a, scope: {team: x}}]",  # no amount
        "budgets: [{id: a, scope: {region: x}, per_day: '1'}]",  # unknown scope
        "budgets: [{id: a, scope: {user: x, team: y}, per_day: '1'}]",  # two scopes, one a user
        "budgets: [{id: a, scope: {team: x, model: y}, per_day: '1'}]",  # two scopes
        "budgets: [{id: a, scope: {team: x}, per_day: '1', colour: red}]",  # unknown key
        "budgets: [{id: a, scope: {team: x}, per_day: '1'}, {id: a, scope: {team: y}, per_day: '1'}]",
    ],
)
def test_bad_files_fail(tmp_path: Path, text: str) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    with pytest.raises(BudgetError):
        load_budgets(path)


USER_BUDGETS = """
budgets:
  - id: alice
    scope: {user: alice}
    per_day: "1.00"
    per_month: "20"
  - id: bob
    scope: {user: bob}
    per_day: "1.00"
  - id: carol
    scope: {user: carol}
    per_day: "5.00"
  - id: dave
    scope: {user: dave}
    per_day: "1"
    per_month: "3"
  - id: search
    scope: {team: search}
    per_day: "100"
"""


def test_user_budgets_from_llm_calls(tmp_path: Path, chdb_client: Client) -> None:
    """Per-user spend is summed from llm_calls (usage partials have no user): over, warn, ok, and a user
    without calls; unpriced calls, other users, other months and calls after `now` add nothing."""
    path = tmp_path / "users.yaml"
    path.write_text(USER_BUDGETS)
    budgets = load_budgets(path)
    now = datetime(2026, 9, 10, 12, tzinfo=UTC)

    def at(day: int, hour: int) -> int:
        return int(datetime(2026, 9, day, hour, tzinfo=UTC).timestamp()) * 10**9

    spent = [  # (user, when, cost)
        ("alice", at(10, 1), Decimal("1.25")),
        ("alice", at(10, 2), None),  # unpriced
        ("alice", at(2, 9), Decimal("2")),  # this month, not today
        ("alice", int(datetime(2026, 8, 31, 23, tzinfo=UTC).timestamp()) * 10**9, Decimal("50")),  # last month
        ("alice", at(10, 13), Decimal("7")),  # after now
        ("bob", at(10, 3), Decimal("0.85")),
        ("carol", at(10, 4), Decimal("0.999999999999")),
        ("carol", at(10, 4), Decimal("0.000000000001")),
        ("", at(10, 5), Decimal("9")),  # no user
        ("alice2", at(10, 5), Decimal("9")),
    ]
    calls = [
        LLMCall(ts_ns=ts, trace_id="u" * 32, span_id=f"{i:016x}", team="search", user_id=user, cost=cost)
        for i, (user, ts, cost) in enumerate(spent)
    ]
    rows = call_rows(calls)
    rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    rows.columns.extend([["budgets/0"] * len(calls), list(range(len(calls)))])
    chdb_client.insert(rows.table, rows.columns, column_names=rows.column_names, column_oriented=True)

    def expected(user: str, since: datetime) -> Decimal:
        start = int(since.timestamp()) * 10**9
        end = int(now.timestamp()) * 10**9
        return sum((c for u, ts, c in spent if u == user and c is not None and start <= ts <= end), Decimal(0))

    day, month = datetime(2026, 9, 10, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)
    spend = current_spend(chdb_client, budgets, now)
    assert spend[("alice", "day")] == expected("alice", day) == Decimal("1.25")
    assert spend[("alice", "month")] == expected("alice", month) == Decimal("3.25")
    assert spend[("bob", "day")] == expected("bob", day)
    assert spend[("carol", "day")] == expected("carol", day) == Decimal(1)
    assert spend[("dave", "day")] == spend[("dave", "month")] == Decimal(0)
    assert user_spend(chdb_client, {"dave", "erin"}, now) == {}
    assert spend[("search", "day")] == Decimal(0)  # a team budget still reads llm_usage_1m (no rows that day)

    statuses = budget_status(budgets, spend, now)
    by_key = {(s.budget_id, s.period): s for s in statuses}
    assert {key: s.status for key, s in by_key.items() if s.scope_kind == "user"} == {
        ("alice", "day"): "exceeded",  # 1.25 >= 1
        ("alice", "month"): "ok",  # 3.25 < 16, projected 3.25 / (9.5 / 30) = 10.26 < 20
        ("bob", "day"): "warn",  # 0.85 >= 0.8 * 1
        ("carol", "day"): "ok",  # 1 < 4, projected 2 < 5
        ("dave", "day"): "ok",
        ("dave", "month"): "ok",
    }
    assert by_key[("alice", "day")].scope_value == "alice"

    status_rows = budget_status_rows(statuses)
    status_rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    status_rows.columns.extend([[""] * len(statuses), [0] * len(statuses)])
    chdb_client.insert(
        "budget_status", status_rows.columns, column_names=status_rows.column_names, column_oriented=True
    )
    stored = chdb_client.query(
        "SELECT budget_id, period, status, toString(spend) FROM budget_status FINAL WHERE scope_kind = 'user'"
    ).result_rows
    assert {(b, p): (st, Decimal(sp)) for b, p, st, sp in stored} == {
        key: (s.status, s.spend) for key, s in by_key.items() if s.scope_kind == "user"
    }
