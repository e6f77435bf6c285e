"""Top spenders per hour (migration 012): llm_calls written by the real sink feed llm_top_spenders_1h through
its view, against cost sums computed here from the calls themselves."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

import pytest
from clickhouse_connect.driver.client import Client

from processors.core.records import LLMCall
from processors.core.rows import call_rows
from processors.core.tables import TableRows
from sinks.clickhouse.writer import ClickHouseSink

HOUR_NS = 3600 * 10**9
T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
SERVICES = ("chat-api", "search-api")


def calls(n: int, users: int, seed: int, start_ns: int = T0) -> list[LLMCall]:
    """n calls over two hours and two services; callers Zipf-like over `users` users (some anonymous,
    some unpriced), costs with 12 decimals."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 1.2 for rank in range(users)]
    out = []
    for i in range(n):
        user = rng.choices(range(users), weights)[0]
        out.append(
            LLMCall(
                ts_ns=start_ns + rng.randrange(2 * HOUR_NS),
                trace_id=f"{seed:08x}{i:024x}",
                span_id=f"{i:016x}",
                service=SERVICES[i % 2],
                environment="prod",
                team="assistants",
                user_id="" if rng.random() < 0.05 else f"user-{user}",
                conversation_id=f"conv-{user}-{rng.randrange(3)}",
                cost=None if rng.random() < 0.05 else Decimal(rng.randrange(1, 10**10)).scaleb(-12),
            )
        )
    return out


def write(sink: ClickHouseSink, batch: Sequence[LLMCall], offset: int, token: str) -> None:
    rows: TableRows = call_rows(batch)
    rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    rows.columns.extend([["test/0"] * len(batch), [offset] * len(batch)])
    sink.write(rows, token=token)


def exact(batch: Sequence[LLMCall], field: str) -> dict[tuple[int, str, str], int]:
    """pico-USD per (hour, service, entity), priced calls with a non-empty entity only."""
    out: dict[tuple[int, str, str], int] = defaultdict(int)
    for call in batch:
        entity = getattr(call, field)
        if entity and call.cost is not None:
            out[(call.ts_ns // HOUR_NS * 3600, call.service, entity)] += int(call.cost.scaleb(12))
    return dict(out)


def stored(client: Client, column: str, database: str = "llmops") -> dict[tuple[int, str, str], int]:
    rows = client.query(
        f"SELECT toUnixTimestamp(window_start), service, approx_top_sumMerge(100)({column}) "
        f"FROM {database}.llm_top_spenders_1h GROUP BY window_start, service"
    ).result_rows
    return {(hour, service, item["item"]): int(item["count"]) for hour, service, items in rows for item in items}


@pytest.fixture
def fresh(chdb_client: Client) -> Client:
    chdb_client.command("TRUNCATE TABLE llm_calls")
    chdb_client.command("TRUNCATE TABLE llm_top_spenders_1h")
    return chdb_client


def test_the_state_holds_each_users_exact_cost_when_they_fit(fresh: Client) -> None:
    """No more users or conversations per hour and service than the 100 items the state returns (it counts
    300): every weight is exact, whatever the batch split; a retried insert (same token, deduplicated by
    ClickHouse) does not reach the view twice."""
    population = calls(3000, users=30, seed=1)
    sink = ClickHouseSink(fresh, "llmops")
    for offset, start in enumerate(range(0, len(population), 250)):
        write(sink, population[start : start + 250], offset, token=f"llm_calls:{offset}")
    write(sink, population[:250], 0, token="llm_calls:0")  # the retry of the first insert
    assert stored(fresh, "users") == exact(population, "user_id")
    assert stored(fresh, "conversations") == exact(population, "conversation_id")
    assert fresh.query("SELECT count() FROM llm_calls").result_rows[0][0] == len(population)


def test_anonymous_and_unpriced_calls_weigh_nothing(fresh: Client) -> None:
    batch = [
        LLMCall(ts_ns=T0, trace_id="a" * 32, span_id="1" * 16, service="s", user_id="", cost=Decimal("9")),
        LLMCall(ts_ns=T0, trace_id="a" * 32, span_id="2" * 16, service="s", user_id="free", cost=None),
        LLMCall(ts_ns=T0, trace_id="a" * 32, span_id="3" * 16, service="s", user_id="paid", cost=Decimal("0.5")),
    ]
    write(ClickHouseSink(fresh, "llmops"), batch, 0, token="llm_calls:0")
    assert stored(fresh, "users") == {(T0 // 10**9, "s", "paid"): 500_000_000_000}
    assert stored(fresh, "conversations") == {}


def test_panel_ranking_of_candidates_by_exact_cost_finds_the_exact_top_ten(fresh: Client) -> None:
    """Many more users than counters: the state's items, ranked by their cost summed from llm_calls, are the
    top ten users by exact cost over both hours and services, with their exact cost."""
    population = calls(20_000, users=5_000, seed=2)
    sink = ClickHouseSink(fresh, "llmops")
    for offset, start in enumerate(range(0, len(population), 1000)):
        write(sink, population[start : start + 1000], offset, token=f"llm_calls:{offset}")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for call in population:
        if call.user_id and call.cost is not None:
            totals[call.user_id] += call.cost
    expected = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:10]
    panel = fresh.query(
        "SELECT user_id, sum(cost) AS cost_usd FROM llm_calls WHERE user_id IN "
        "(SELECT arrayJoin(approx_top_sumMerge(100)(users)).item FROM llm_top_spenders_1h) "
        "GROUP BY user_id ORDER BY cost_usd DESC, user_id LIMIT 10"
    ).result_rows
    assert [(user, Decimal(cost)) for user, cost in panel] == expected
    assert len(stored(fresh, "users")) == 2 * 2 * 100  # 100 items per hour and service, of 5,000 users
