"""`llmops pricing reprice`: price stored calls again, and make the per-window aggregates follow.

Which calls: those since T whose cost is NULL (a price was added after they arrived), or with
`--model M` every call of M since T (a price was corrected).

How writes reach the store. The worker's SQL endpoint is read-only, so reprice writes to the
store itself: an embedded chDB store only while no stack runs (chDB belongs to one process;
the command refuses while `llmops up` serves the data dir), a ClickHouse server directly
through its DSN. Two mutations, each keyed through a temporary `Join` table:

1. `llm_calls`: cost and the pricing columns of the calls whose price changed
   (`ALTER TABLE ... UPDATE ... = joinGet(...)`).
2. `llm_usage_1m`: a reconciliation, not a delta. For every (window, key, Kafka source) of
   the affected range, the truth is recomputed from `llm_calls` (priced_calls, unpriced_calls,
   cost); where the stored partials differ, the partial with the source's highest
   `_ingest_offset` is set to the truth and the source's other partials of that window and key
   to zero. Counters never go negative, the sink's fences (max `_ingest_offset` per source)
   do not move, and other columns are untouched.

Idempotent: a second run finds no call whose price changes and no window whose sums differ, and
writes nothing. A run interrupted between the two steps is completed by the next one, because
step 2 compares with `llm_calls` instead of replaying what step 1 changed. On a live server,
reprice windows older than the allowed lateness: a partial inserted by a worker while a
mutation runs is not part of that mutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

from processors.core.errors import LlmopsError
from processors.core.pricer import Pricer
from processors.core.records import LLMCall

__all__ = ["reprice", "RepriceReport", "RepriceError"]

_KEYS = (
    "window_start",
    "service",
    "environment",
    "team",
    "provider",
    "model",
    "operation",
    "agent",
    "prompt_name",
    "prompt_version",
)
_GROUP = (*_KEYS, "_ingest_source")
_PRICING = ("cost", "pricing_entry", "pricing_source", "pricing_version", "pricing_assumption")


class RepriceError(LlmopsError, RuntimeError):
    """The store did not end up consistent (reported, never silently ignored)."""


@dataclass(frozen=True, slots=True)
class RepriceReport:
    examined: int  # calls read
    repriced: int  # calls whose cost or pricing columns changed
    still_unpriced: int  # examined calls with no price after the run
    windows_fixed: int  # (window, key, source) partial groups rewritten
    cost_before: Decimal  # sum of the examined calls' cost before (NULL as 0)
    cost_after: Decimal

    def render(self) -> str:
        return (
            f"{self.repriced} of {self.examined} calls repriced ({self.still_unpriced} still unpriced); "
            f"cost {self.cost_before} -> {self.cost_after} USD; {self.windows_fixed} window partials reconciled"
        )


def _select_calls(client: Client, since: datetime, model: str | None) -> list[dict[str, Any]]:
    where = "ts >= {since:DateTime64(9, 'UTC')} AND " + ("model = {model:String}" if model else "cost IS NULL")
    result = client.query(
        "SELECT toUnixTimestamp64Nano(ts) AS ts_ns, trace_id, span_id, provider, request_model, response_model, "
        "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, "
        "cost, pricing_entry, pricing_source, pricing_version, pricing_assumption, pricing_region, service_tier "
        f"FROM llm_calls WHERE {where}",
        parameters={"since": since, "model": model or ""},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _reprice_rows(pricer: Pricer, rows: list[dict[str, Any]]) -> tuple[list[list[Any]], int, Decimal, Decimal]:
    changed: list[list[Any]] = []
    unpriced = 0
    before = after = Decimal(0)
    for row in rows:
        call = LLMCall(
            ts_ns=int(row["ts_ns"]),
            trace_id=row["trace_id"],
            span_id=row["span_id"],
            provider=row["provider"],
            request_model=row["request_model"],
            response_model=row["response_model"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
        )
        pricer.price_stored(call, row["pricing_region"], row["service_tier"])
        new = (call.cost, call.pricing_entry, call.pricing_source, call.pricing_version, call.pricing_assumption)
        old = tuple(row[name] for name in _PRICING)
        before += old[0] or 0
        after += call.cost or 0
        if call.cost is None:
            unpriced += 1
        if new != old:
            changed.append([row["trace_id"], row["span_id"], *new])
    return changed, unpriced, before, after


def _join_table(client: Client, name: str, columns: str, keys: tuple[str, ...]) -> str:
    table = f"`{client.database}`.`{name}`"
    client.command(f"DROP TABLE IF EXISTS {table}")
    client.command(f"CREATE TABLE {table} ({columns}) ENGINE = Join(ANY, LEFT, {', '.join(keys)})")
    return table


def _update_calls(client: Client, changed: list[list[Any]], since: datetime) -> None:
    table = _join_table(
        client,
        "_reprice_calls",
        "trace_id String, span_id String, present UInt8, cost Nullable(Decimal(38, 12)), pricing_entry String, "
        "pricing_source String, pricing_version String, pricing_assumption String",
        ("trace_id", "span_id"),
    )
    try:
        join_name = table.replace("`", "")
        client.insert(
            join_name.split(".", 1)[1],
            [[r[0], r[1], 1, *r[2:]] for r in changed],
            column_names=["trace_id", "span_id", "present", *_PRICING],
        )
        sets = ", ".join(f"{c} = joinGet('{join_name}', '{c}', trace_id, span_id)" for c in _PRICING)
        # A Join table cannot be scanned (IN (SELECT ...)): membership is joinGet's `present` flag.
        _mutate(
            client,
            "llm_calls",
            f"ALTER TABLE llm_calls UPDATE {sets} WHERE ts >= {{since:DateTime64(9, 'UTC')}} "
            f"AND joinGet('{join_name}', 'present', trace_id, span_id) = 1 SETTINGS mutations_sync = 2",
            {"since": since},
        )
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")


def _group_sums(client: Client, sql: str, since: datetime, model: str | None) -> dict[tuple, tuple]:
    result = client.query(sql, parameters={"since": since, "model": model or ""})
    n = len(_GROUP)
    return {tuple(row[:n]): tuple(row[n:]) for row in result.result_rows}


def _truth_and_stored(
    client: Client, since: datetime, model: str | None
) -> tuple[dict[tuple, tuple], dict[tuple, tuple]]:
    keys = ", ".join(_GROUP)
    model_filter = " AND model = {model:String}" if model else ""
    truth = _group_sums(
        client,
        f"SELECT toStartOfMinute(ts) AS window_start, {', '.join(_GROUP[1:])}, countIf(cost IS NOT NULL) AS priced, "
        f"countIf(cost IS NULL) AS unpriced, sum(ifNull(cost, toDecimal128(0, 12))) AS cost_sum FROM llm_calls "
        f"WHERE ts >= toStartOfMinute({{since:DateTime64(9, 'UTC')}}){model_filter} GROUP BY {keys}",
        since,
        model,
    )
    stored = _group_sums(
        client,
        f"SELECT {keys}, sum(priced_calls), sum(unpriced_calls), sum(cost), max(_ingest_offset) FROM llm_usage_1m "
        f"WHERE window_start >= toStartOfMinute({{since:DateTime64(9, 'UTC')}}){model_filter} GROUP BY {keys}",
        since,
        model,
    )
    return truth, stored


def _reconcile_usage(client: Client, since: datetime, model: str | None) -> int:
    truth, stored = _truth_and_stored(client, since, model)
    fixes = []
    for group, (priced, unpriced, cost) in truth.items():
        have = stored.get(group)
        if have is None:
            raise RepriceError(
                f"llm_usage_1m has no partial for {group} that llm_calls has: not repriced, check the sink"
            )
        if (priced, unpriced, cost) != have[:3]:
            fixes.append([*group, 1, have[3], cost, priced, unpriced])
    if not fixes:
        return 0
    columns = (
        "window_start DateTime('UTC'), service String, environment String, team String, provider String, model String, "
        "operation String, agent String, prompt_name String, prompt_version String, _ingest_source String, "
        "present UInt8, carrier UInt64, cost Decimal(38, 12), priced_calls UInt64, unpriced_calls UInt64"
    )
    table = _join_table(client, "_reprice_usage", columns, _GROUP)
    join_name = table.replace("`", "")
    try:
        client.insert(
            join_name.split(".", 1)[1],
            fixes,
            column_names=[*_GROUP, "present", "carrier", "cost", "priced_calls", "unpriced_calls"],
        )
        key_args = ", ".join(_GROUP)
        carrier = f"_ingest_offset = joinGet('{join_name}', 'carrier', {key_args})"
        sets = ", ".join(
            f"{c} = if({carrier}, joinGet('{join_name}', '{c}', {key_args}), {zero})"
            for c, zero in (
                ("cost", "toDecimal128(0, 12)"),
                ("priced_calls", "toUInt64(0)"),
                ("unpriced_calls", "toUInt64(0)"),
            )
        )
        _mutate(
            client,
            "llm_usage_1m",
            f"ALTER TABLE llm_usage_1m UPDATE {sets} "
            f"WHERE window_start >= toStartOfMinute({{since:DateTime64(9, 'UTC')}}) "
            f"AND joinGet('{join_name}', 'present', {key_args}) = 1 SETTINGS mutations_sync = 2",
            {"since": since},
        )
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
    truth, stored = _truth_and_stored(client, since, model)
    left = [g for g, sums in truth.items() if sums != stored.get(g, (None,) * 4)[:3]]
    if left:
        raise RepriceError(
            f"{len(left)} window partial groups still differ from llm_calls after reconciling, e.g. {left[0]}"
        )
    return len(fixes)


def _mutate(client: Client, table: str, sql: str, parameters: dict[str, Any]) -> None:
    """Run one mutation synchronously; a failed one is killed, so that it does not retry forever."""
    try:
        client.command(sql, parameters=parameters)
    except Exception as exc:
        client.command(
            "KILL MUTATION WHERE database = {db:String} AND table = {t:String} AND NOT is_done",
            parameters={"db": client.database, "t": table},
        )
        raise RepriceError(
            f"updating {table} failed, nothing of that step was applied: {str(exc).splitlines()[0]}"
        ) from None


def reprice(client: Client, pricer: Pricer, since: datetime, model: str | None = None) -> RepriceReport:
    """Reprice calls since `since` (NULL-cost ones, or all of `model`) and reconcile llm_usage_1m."""
    rows = _select_calls(client, since, model)
    changed, unpriced, before, after = _reprice_rows(pricer, rows)
    if changed:
        _update_calls(client, changed, since)
    fixed = _reconcile_usage(client, since, model)
    return RepriceReport(len(rows), len(changed), unpriced, fixed, before, after)
