"""Top spenders per window (issue 19): a Python heavy-hitter summary against ClickHouse's own state.

Both keep the heaviest users and conversations per hour by exact cost (integer pico-USD) without a row per
user, and both are read the way the panel reads them: the summary's items are candidates, their exact cost
is summed from llm_calls. Measured on a Zipf population against the exact answer (numpy, integers):

(a) ``python``: what a per-window signal would do in the worker. Per batch (one insert, as the worker
    makes) and hour: the exact weight of each user and conversation of the batch (the batch is in memory),
    the `--k` heaviest as rows, and the (k+1)-th weight as the batch's residual (an entity left out had at
    most that much in it). Rows merge by sum (an AggregatingMergeTree with SimpleAggregateFunction(sum), as
    the signal table template makes), so a reader's weight is a lower bound and adding the residuals of
    the partials gives an upper bound. Costed as CPU of this thread per call for fold + rows.
(b) ``clickhouse``: migration 012's materialized view from llm_calls into llm_top_spenders_1h
    (`approx_top_sumState(100)`, a Space-Saving state merged with `approx_top_sumMerge`). Costed as the
    extra wall and process CPU time (chDB threads and merges included) of inserting the calls into the real
    llm_calls through the real sink, against a second database of the same chDB store without the view;
    batches alternate between the two, so both see the same machine.

Accuracy per method and kind, for K = 10 and 100: recall of the exact top K among the method's K heaviest
(by its own estimate), recall of the panel's top K (the candidates ranked by exact cost), and the largest
relative error of the method's own weight over its K heaviest. Bytes: active parts on disk per table after
OPTIMIZE FINAL, per hour; against the same data as one row per (hour, user) and (hour, conversation).

    .venv/bin/python benchmarks/bench_top_spenders.py --users 1000000 --calls 300000 [--hours 1] [--output FILE]
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks run as scripts

from benchmarks.timing import median_seconds
from processors.core.records import LLMCall
from processors.core.rows import call_rows
from processors.core.tables import TableRows
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
PICO = 10**12
KINDS = ("users", "conversations")
# (model, pico-USD per input token, per output token): USD per million tokens times 10**6.
MODELS = (
    ("gpt-4o-mini", 150_000, 600_000),
    ("gpt-4o", 2_500_000, 10_000_000),
    ("claude-sonnet-4", 3_000_000, 15_000_000),
)


def population(users: int, calls: int, hours: int, zipf: float, seed: int) -> list[LLMCall]:
    """`calls` priced calls over `hours` hours; callers drawn from a Zipf(`zipf`) law over `users` users.

    Each user's calls fall in a few conversations (geometric), 2 % of calls are unpriced and 3 % carry no
    user (they have a conversation), as real traffic does."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, users + 1, dtype=np.float64) ** zipf
    rank = rng.choice(users, size=calls, p=weights / weights.sum())
    ids = rng.permutation(users)[rank]  # a user's id says nothing of its rank
    conversation = rng.geometric(0.35, size=calls)
    model = rng.integers(0, len(MODELS), size=calls)
    tokens_in = np.maximum(1, rng.lognormal(np.log(800), 1.0, size=calls)).astype(np.int64)
    tokens_out = np.maximum(1, rng.lognormal(np.log(200), 0.8, size=calls)).astype(np.int64)
    unpriced = rng.random(calls) < 0.02
    anonymous = rng.random(calls) < 0.03
    ts = np.sort(T0 * 10**9 + rng.integers(0, hours * 3600 * 10**9, size=calls))
    out = []
    for i in range(calls):
        _, price_in, price_out = MODELS[model[i]]
        pico = int(tokens_in[i]) * price_in + int(tokens_out[i]) * price_out
        out.append(
            LLMCall(
                ts_ns=int(ts[i]),
                trace_id=f"{i:032x}",
                span_id=f"{i:016x}",
                service="chat-api",
                environment="prod",
                team="assistants",
                provider="openai",
                request_model=MODELS[model[i]][0],
                input_tokens=int(tokens_in[i]),
                output_tokens=int(tokens_out[i]),
                user_id="" if anonymous[i] else f"user-{ids[i]:07d}",
                conversation_id=f"conv-{ids[i]:07d}-{conversation[i]}",
                cost=None if unpriced[i] else Decimal(pico).scaleb(-12),
            )
        )
    return out


def exact_weights(calls: Iterable[LLMCall]) -> dict[str, dict[str, int]]:
    """Exact pico-USD per user and per conversation over all calls (the reference)."""
    out: dict[str, dict[str, int]] = {kind: defaultdict(int) for kind in KINDS}
    for call in calls:
        if call.cost is None:
            continue
        pico = int(call.cost.scaleb(12))
        if call.user_id:
            out["users"][call.user_id] += pico
        if call.conversation_id:
            out["conversations"][call.conversation_id] += pico
    return out


# ----------------------------------------------------------------------------- (a) the Python summary

SUMMARY_COLUMNS = ["window_start", "kind", "entity", "weight", "residual", "_ingest_source", "_ingest_offset"]
SUMMARY_DDL = """
CREATE TABLE {db}.top_spenders_signal (
    window_start DateTime('UTC'),
    kind LowCardinality(String),
    entity String,
    weight SimpleAggregateFunction(sum, UInt64),
    residual SimpleAggregateFunction(sum, UInt64),
    _ingest_source LowCardinality(String),
    _ingest_offset SimpleAggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window_start, kind, entity, _ingest_source)
"""


def summary_rows(calls: Sequence[LLMCall], k: int, offset: int) -> TableRows:
    """One batch's partial rows: per hour and kind, the k heaviest entities exactly, and the residual."""
    totals: dict[tuple[int, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for call in calls:
        cost = call.cost
        if cost is None:
            continue
        pico = int(cost.scaleb(12))
        hour = call.ts_ns // 3_600_000_000_000 * 3600
        if call.user_id:
            totals[(hour, "users")][call.user_id] += pico
        if call.conversation_id:
            totals[(hour, "conversations")][call.conversation_id] += pico
    rows = TableRows("top_spenders_signal", list(SUMMARY_COLUMNS))
    window, kind, entity, weight, residual, source, offsets = rows.columns
    for (hour, what), weights in totals.items():
        top = heapq.nlargest(k + 1, weights.items(), key=lambda item: item[1])
        for name, value in top[:k]:
            window.append(hour)
            kind.append(what)
            entity.append(name)
            weight.append(value)
            residual.append(0)
        window.append(hour)
        kind.append(what)
        entity.append("")
        weight.append(0)
        residual.append(top[k][1] if len(top) > k else 0)
    source.extend(["bench/0"] * len(window))
    offsets.extend([offset] * len(window))
    return rows


def summary_candidates(client: Client, db: str, kind: str, k: int) -> tuple[list[tuple[str, int]], int]:
    rows = client.query(
        f"SELECT entity, sum(weight) AS w FROM {db}.top_spenders_signal WHERE kind = {{kind:String}} AND entity != '' "
        "GROUP BY entity ORDER BY w DESC, entity LIMIT {k:UInt32}",
        parameters={"kind": kind, "k": k},
    ).result_rows
    residual = client.query(
        f"SELECT sum(residual) FROM {db}.top_spenders_signal WHERE kind = {{kind:String}}", parameters={"kind": kind}
    ).result_rows[0][0]
    return [(name, int(w)) for name, w in rows], int(residual)


# ----------------------------------------------------------------------------- (b) ClickHouse's state


def state_candidates(client: Client, db: str, kind: str) -> list[tuple[str, int, int]]:
    (items,) = client.query(f"SELECT approx_top_sumMerge(100)({kind}) FROM {db}.llm_top_spenders_1h").result_rows[0]
    return [(item["item"], int(item["count"]), int(item["error"])) for item in items]


# ----------------------------------------------------------------------------- measuring


def accuracy(exact: dict[str, int], estimated: list[tuple[str, int]], ks: Sequence[int]) -> dict[str, Any]:
    """Recall of the exact top K among the estimate's K heaviest, of the panel's top K (candidates ranked by
    exact cost), and the largest relative error of the estimate's own weights over its K heaviest."""
    truth = sorted(exact.items(), key=lambda item: (-item[1], item[0]))
    candidates = [name for name, _ in estimated]
    panel = sorted(candidates, key=lambda name: (-exact.get(name, 0), name))
    out: dict[str, Any] = {}
    for k in ks:
        top = {name for name, _ in truth[:k]}
        # Ties at the K-th weight: any of them is a right answer.
        kth = truth[k - 1][1] if len(truth) >= k else 0
        right = {name for name, weight in truth if weight >= kth}
        errors = [abs(w - exact.get(name, 0)) / exact[name] for name, w in estimated[:k] if exact.get(name)]
        out[f"top{k}"] = {
            "recall_by_estimate": len({name for name, _ in estimated[:k]} & right) / len(top),
            "recall_panel": len(set(panel[:k]) & right) / len(top),
            "max_relative_error_of_estimate": max(errors, default=None),
            "estimate_items_not_seen": sum(1 for name, _ in estimated[:k] if name not in exact),
        }
    return out


def part_bytes(client: Client, db: str, table: str) -> dict[str, int]:
    client.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    rows, on_disk, uncompressed = client.query(
        "SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
        "WHERE active AND database = {db:String} AND table = {table:String}",
        parameters={"db": db, "table": table},
    ).result_rows[0]
    return {"rows": int(rows), "bytes_on_disk": int(on_disk), "uncompressed_bytes": int(uncompressed)}


# The panel's way: candidates from the state, their exact cost from llm_calls; against GROUP BY user_id.
PANEL_SQL = (
    "SELECT user_id, sum(cost) AS c FROM {db}.llm_calls WHERE user_id IN (SELECT arrayJoin(approx_top_sumMerge(100)"
    "(users)).item FROM {db}.llm_top_spenders_1h) GROUP BY user_id ORDER BY c DESC LIMIT 10"
)
EXACT_SQL = (
    "SELECT user_id, sum(cost) AS c FROM {db}.llm_calls WHERE user_id != '' GROUP BY user_id ORDER BY c DESC LIMIT 10"
)


def panel_queries(client: Client, db: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, sql in (("candidates_then_exact", PANEL_SQL), ("exact_group_by", EXACT_SQL)):
        query = sql.format(db=db)
        out[name] = 1e3 * median_seconds(partial(client.query, query), repeat=5, warmup=True)
    panel = client.query(PANEL_SQL.format(db=db)).result_rows
    exact = client.query(EXACT_SQL.format(db=db)).result_rows
    out["same_top10"] = panel == exact
    return out


def tagged(rows: TableRows, offset: int) -> TableRows:
    n = len(rows)
    rows.column_names.extend(["_ingest_source", "_ingest_offset"])
    rows.columns.extend([["bench/0"] * n, [offset] * n])
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    calls = population(args.users, args.calls, args.hours, args.zipf, args.seed)
    batches = [calls[i : i + args.batch] for i in range(0, len(calls), args.batch)]
    exact = exact_weights(calls)
    print(
        f"population: {len(calls):,} calls, {len(exact['users']):,} users and {len(exact['conversations']):,} "
        f"conversations with priced calls ({time.perf_counter() - began:.0f} s)",
        file=sys.stderr,
    )

    # (a) fold + rows on this thread, before chDB starts any thread of its own.
    fold_cpu = []
    partials = []
    for i, batch in enumerate(batches):
        start = time.thread_time()
        partials.append(summary_rows(batch, args.k, i))
        fold_cpu.append(time.thread_time() - start)

    store = tempfile.mkdtemp(prefix="bench-top-spenders-")
    client = connect(f"chdb://{store}", "with_view", create_database=True)
    client.command("CREATE DATABASE IF NOT EXISTS without_view")
    for db in ("with_view", "without_view"):
        apply_migrations(client, db)
    client.command("DROP VIEW without_view.llm_calls_to_top_spenders")
    sinks = {db: ClickHouseSink(client, db) for db in ("with_view", "without_view")}
    insert: dict[str, list[tuple[float, float]]] = {db: [] for db in sinks}
    for i, batch in enumerate(batches):
        order = ("with_view", "without_view") if i % 2 == 0 else ("without_view", "with_view")
        for db in order:
            rows = tagged(call_rows(batch), i)
            wall, cpu = time.perf_counter(), time.process_time()
            sinks[db].write(rows, token=f"llm_calls:{i}")
            insert[db].append((time.perf_counter() - wall, time.process_time() - cpu))
    client.command(SUMMARY_DDL.format(db="with_view"))
    summary_insert = []
    for rows in partials:
        wall, cpu = time.perf_counter(), time.process_time()
        client.insert(
            "with_view.top_spenders_signal", rows.columns, column_names=rows.column_names, column_oriented=True
        )
        summary_insert.append((time.perf_counter() - wall, time.process_time() - cpu))
    for kind, column in (("users", "user_id"), ("conversations", "conversation_id")):
        client.command(
            f"CREATE TABLE with_view.exact_{kind} ENGINE = MergeTree ORDER BY (window_start, entity) AS "
            f"SELECT toStartOfHour(ts) AS window_start, {column} AS entity, sum(toUInt64(cost * 1000000000000)) "
            f"AS weight FROM with_view.llm_calls WHERE {column} != '' AND cost IS NOT NULL GROUP BY ALL"
        )

    result: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "batches": len(batches),
        "python": {
            "cpu_us_per_call": 1e6 * sum(fold_cpu) / len(calls),
            "rows_per_batch_mean": sum(len(rows) for rows in partials) / len(partials),
            "insert_wall_us_per_call": 1e6 * sum(w for w, _ in summary_insert) / len(calls),
            "insert_cpu_us_per_call": 1e6 * sum(c for _, c in summary_insert) / len(calls),
        },
        "clickhouse": {},
        "accuracy": {},
        "bytes": {},
    }
    with_view = np.array(insert["with_view"])
    without = np.array(insert["without_view"])
    result["clickhouse"] = {
        "insert_wall_us_per_call_with_view": 1e6 * with_view[:, 0].sum() / len(calls),
        "insert_wall_us_per_call_without_view": 1e6 * without[:, 0].sum() / len(calls),
        "insert_cpu_us_per_call_with_view": 1e6 * with_view[:, 1].sum() / len(calls),
        "insert_cpu_us_per_call_without_view": 1e6 * without[:, 1].sum() / len(calls),
        "insert_wall_ms_per_batch_median_with_view": 1e3 * statistics.median(with_view[:, 0]),
        "insert_wall_ms_per_batch_median_without_view": 1e3 * statistics.median(without[:, 0]),
    }
    for kind in KINDS:
        candidates, residual = summary_candidates(client, "with_view", kind, 100)
        state = state_candidates(client, "with_view", kind)
        result["accuracy"][kind] = {
            "python": {**accuracy(exact[kind], candidates, (10, 100)), "residual_sum_usd": residual / PICO},
            "clickhouse": {
                **accuracy(exact[kind], [(name, count) for name, count, _ in state], (10, 100)),
                "max_reported_error_usd": max((error for *_, error in state), default=0) / PICO,
            },
            "top1_usd": max(exact[kind].values()) / PICO,
            "top100_usd": sorted(exact[kind].values(), reverse=True)[99] / PICO,
        }
    result["panel_query_ms"] = panel_queries(client, "with_view")
    for table in ("llm_top_spenders_1h", "top_spenders_signal", "exact_users", "exact_conversations"):
        result["bytes"][table] = part_bytes(client, "with_view", table)
        result["bytes"][table]["bytes_on_disk_per_hour"] = result["bytes"][table]["bytes_on_disk"] / args.hours
    result["seconds"] = time.perf_counter() - began
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent of the users' call law")
    parser.add_argument("--batch", type=int, default=1000, help="calls per worker batch (one insert)")
    parser.add_argument("--k", type=int, default=100, help="entities the Python summary keeps per partial")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
