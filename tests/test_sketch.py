"""Sketch accuracy against numpy's exact quantiles, inside one window and merged in ClickHouse (chDB).

Rank rule: the sketch answers the bucket of the 0-based floor(q * (n - 1))-th smallest value,
which is numpy's ``method="lower"``; the estimate must be within the relative accuracy of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.core.latency import LatencyRows, metric_rows
from processors.core.sketch import (
    GroupedSketches,
    Sketch,
    bucket_keys,
    bucket_values,
    gamma_for,
)
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations

QS = (0.5, 0.9, 0.95, 0.99, 0.999)
N = 1_200_000
WINDOWS = 60
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, Unix seconds
EPS = 1e-9  # float slack on top of the accuracy bound


def _rel_err(estimate: np.ndarray | float, truth: np.ndarray | float) -> np.ndarray:
    return np.abs(np.asarray(estimate) - np.asarray(truth)) / np.abs(np.asarray(truth))


def _samples(name: str, rng: np.random.Generator) -> np.ndarray:
    if name == "lognormal":
        return rng.lognormal(mean=np.log(400.0), sigma=0.8, size=N)
    if name == "pareto":  # heavy tail: shape 1.2, scale 50 ms
        return (rng.pareto(1.2, size=N) + 1.0) * 50.0
    fast = rng.lognormal(np.log(40.0), 0.3, size=N)  # bimodal: cache hits vs full generations
    slow = rng.lognormal(np.log(3000.0), 0.5, size=N)
    return np.where(rng.random(N) < 0.7, fast, slow)


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A chDB store with the project's migrations applied by the project's own runner."""
    client = connect(f"chdb://{tmp_path_factory.mktemp('chdb_sketch')}", "llmops", create_database=True)
    apply_migrations(client, "llmops")
    assert apply_migrations(client, "llmops") == []  # idempotent: a second run applies nothing
    yield client
    client.close()


def map_literal(sketch: Sketch) -> str:
    """A ``Map(Int32, UInt64)`` SQL literal of the sketch's buckets."""
    return (
        f"mapFromArrays(CAST({sketch.keys.tolist()} AS Array(Int32)), CAST({sketch.counts.tolist()} AS Array(UInt64)))"
    )


def insert(client: Client, rows: LatencyRows) -> None:
    client.insert("llm_latency_1m", rows.column_data(), column_names=list(rows.column_names), column_oriented=True)  # type: ignore[arg-type]  # clickhouse-connect inserts numpy columns; its annotation says Sequence


# ---------------------------------------------------------------- mapping


@pytest.mark.parametrize("accuracy", [0.005, 0.01, 0.02, 0.05])
def test_bucket_value_is_within_accuracy_of_every_member(accuracy: float) -> None:
    rng = np.random.default_rng(7)
    v = 10.0 ** rng.uniform(-6, 6, size=200_000)
    gamma = gamma_for(accuracy)
    k = bucket_keys(v, gamma)
    assert np.all(_rel_err(bucket_values(k, gamma), v) <= accuracy + EPS)
    # k is the smallest integer with v <= gamma**k (up to float rounding of log)
    upper = np.power(gamma, k.astype(np.float64))
    lower = np.power(gamma, k.astype(np.float64) - 1)
    assert np.all(v <= upper * (1 + 1e-12)) and np.all(v > lower * (1 - 1e-12))


def test_gamma_and_key_by_hand() -> None:
    gamma = gamma_for(0.01)
    assert gamma == pytest.approx(1.01 / 0.99, rel=1e-15)
    # log(100) / log(1.0202...) = 230.25... -> 231
    assert bucket_keys([100.0], gamma).tolist() == [231]
    assert bucket_keys([1.0], gamma).tolist() == [0]
    assert bucket_keys([0.5], gamma).tolist() == [-34]  # -0.6931 / 0.0202 = -34.31 -> ceil -34
    assert bucket_values([0], gamma)[0] == pytest.approx(2 / (gamma + 1))


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        gamma_for(0.0)
    with pytest.raises(ValueError, match="relative_accuracy"):
        gamma_for(1.0)
    with pytest.raises(ValueError, match="finite values"):
        bucket_keys([1.0, 0.0], gamma_for(0.01))
    with pytest.raises(ValueError, match="quantiles"):
        Sketch.from_values([1.0]).quantile(1.5)
    with pytest.raises(ValueError, match="different gamma"):
        Sketch.from_values([1.0]).merge(Sketch.from_values([1.0], relative_accuracy=0.02))
    with pytest.raises(ValueError, match="differ in length"):
        GroupedSketches.from_batch([0, 1], [1.0])
    with pytest.raises(ValueError, match="group id is 5"):
        GroupedSketches.from_batch([0, 5], [1.0, 2.0], n_groups=3)


# ---------------------------------------------------------------- accuracy on 1M+ samples


@pytest.fixture(scope="module", params=["lognormal", "pareto", "bimodal"])
def dataset(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng({"lognormal": 1, "pareto": 2, "bimodal": 3}[request.param])
    values = _samples(request.param, rng)
    windows = rng.integers(0, WINDOWS, size=N)
    return request.param, values, windows


def test_quantiles_of_one_sketch_within_accuracy(dataset: tuple[str, np.ndarray, np.ndarray]) -> None:
    _, values, _ = dataset
    truth = np.quantile(values, QS, method="lower")
    est = Sketch.from_values(values).quantiles(QS)
    assert np.all(_rel_err(est, truth) <= 0.01 + EPS), (est, truth)


def test_quantiles_per_window_and_merged_in_clickhouse(ch: Client, dataset: tuple[str, np.ndarray, np.ndarray]) -> None:
    name, values, windows = dataset
    metric = f"test_{name}"
    # two batches with interleaved windows: several partial rows per window, as late data makes them
    half = N // 2
    batches = [slice(0, half), slice(half, N)]
    for part in batches:
        rows = metric_rows(
            T0 + 60 * windows[part],
            np.zeros(part.stop - part.start, np.int64),
            [("svc", "prod", "p", name, name, "chat")],
            metric,
            values[part],
        )
        assert len(rows) == WINDOWS
        insert(ch, rows)

    # merged over all 60 windows, inside ClickHouse
    q_sql = ", ".join(f"sketch_quantile(sumMap(sketch), {q})" for q in QS)
    merged = ch.query(
        f"SELECT {q_sql}, sum(count), count() FROM llm_latency_1m WHERE metric = %(m)s", parameters={"m": metric}
    ).result_rows[0]
    assert merged[-2] == N and merged[-1] == 2 * WINDOWS
    truth = np.quantile(values, QS, method="lower")
    assert np.all(_rel_err(np.array(merged[: len(QS)]), truth) <= 0.01 + EPS), (merged, truth)
    # ... and the same answer as merging in Python
    python = Sketch.from_values(values).quantiles(QS)
    assert np.allclose(merged[: len(QS)], python, rtol=1e-12, atol=0)

    # inside every single window (SQL merges that window's two partial rows)
    per_window = ch.query(
        f"SELECT toUnixTimestamp(window_start), {q_sql} FROM llm_latency_1m WHERE metric = %(m)s "
        "GROUP BY window_start ORDER BY window_start",
        parameters={"m": metric},
    ).result_rows
    assert len(per_window) == WINDOWS
    order = np.argsort(windows, kind="stable")
    bounds = np.searchsorted(windows[order], np.arange(WINDOWS + 1))
    for w, row in enumerate(per_window):
        assert row[0] == T0 + 60 * w
        exact = np.quantile(values[order[bounds[w] : bounds[w + 1]]], QS, method="lower")
        assert np.all(_rel_err(np.array(row[1:]), exact) <= 0.01 + EPS), (w, row, exact)


def test_sumMap_equals_python_merge_bucket_for_bucket(ch: Client) -> None:
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.lognormal(3, 2, 5000), [-1.0, 0.0]])
    windows = rng.integers(0, 5, size=values.size)
    rows = metric_rows(
        T0 + 60 * windows, np.zeros(values.size, np.int64), [("s", "e", "p", "m", "m", "o")], "test_buckets", values
    )
    insert(ch, rows)
    buckets, nonpositive = ch.query(
        "SELECT sumMap(sketch), sum(nonpositive_count) FROM llm_latency_1m WHERE metric = 'test_buckets'"
    ).result_rows[0]
    expected = Sketch.from_values(values)
    assert Sketch.from_map(buckets, gamma_for(0.01), nonpositive) == expected
    assert nonpositive == 2


def test_sql_quantile_function_matches_python_on_small_sketches(ch: Client) -> None:
    rng = np.random.default_rng(5)
    cases = [rng.lognormal(0, 3, size=n) for n in (1, 2, 3, 10, 101)]
    for values in cases:
        sketch = Sketch.from_values(values)
        for q in (0.0, 0.25, 0.5, 0.9, 1.0):
            sql = ch.query(f"SELECT sketch_quantile({map_literal(sketch)}, {q})").result_rows[0][0]
            assert sql == pytest.approx(sketch.quantile(q), rel=1e-12)
    empty = ch.query("SELECT sketch_quantile(map(), 0.5), sketch_quantile_gamma(map(), 0.5, 1.1)").result_rows[0]
    assert all(np.isnan(x) for x in empty)
    # an explicit gamma: 5 % accuracy sketch read with its own gamma
    coarse = Sketch.from_values(rng.lognormal(2, 1, 1000), relative_accuracy=0.05)
    sql = ch.query(f"SELECT sketch_quantile_gamma({map_literal(coarse)}, 0.9, {coarse.gamma!r})").result_rows[0][0]
    assert sql == pytest.approx(coarse.quantile(0.9), rel=1e-12)


# ---------------------------------------------------------------- merge property

finite_values = st.lists(
    st.one_of(
        st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
        st.floats(min_value=-1e3, max_value=0.0, allow_nan=False),
        st.sampled_from([0.0, -0.0, float("nan"), float("inf")]),
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(a=finite_values, b=finite_values, accuracy=st.sampled_from([0.005, 0.01, 0.05]))
def test_merge_equals_sketch_of_union(a: list[float], b: list[float], accuracy: float) -> None:
    merged = Sketch.from_values(a, accuracy).merge(Sketch.from_values(b, accuracy))
    union = Sketch.from_values(a + b, accuracy)
    assert merged == union
    assert merged.count == len(a) + len(b)
    assert merged.to_map() == union.to_map()


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 6), st.floats(min_value=-10, max_value=1e5, allow_nan=False)), max_size=300),
    split=st.integers(0, 300),
)
def test_grouped_batches_accumulate_like_one_batch(data: list[tuple[int, float]], split: int) -> None:
    groups = np.array([g for g, _ in data], dtype=np.int64)
    values = np.array([v for _, v in data], dtype=np.float64)
    first = GroupedSketches.from_batch(groups[:split], values[:split])
    second = GroupedSketches.from_batch(groups[split:], values[split:])
    got = first.merge(second).merge(GroupedSketches.from_batch(groups[:0], values[:0], n_groups=7))  # pad to 7 groups
    whole = GroupedSketches.from_batch(groups, values, n_groups=7)
    assert got.n_groups == whole.n_groups == 7
    for g in range(7):
        members = values[groups == g]
        assert got.sketch(g) == whole.sketch(g) == Sketch.from_values(members)
        assert got.sketch(g).count == members.size
    np.testing.assert_array_equal(got.quantiles([0.5, 0.99]), whole.quantiles([0.5, 0.99]))


def test_grouped_quantiles_match_single_sketches_on_sparse_wide_batch() -> None:
    # many groups and a wide key range take the sort path instead of the dense bincount
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 5000, size=20_000)
    values = 10.0 ** rng.uniform(-3, 9, size=20_000)
    grouped = GroupedSketches.from_batch(groups, values, n_groups=5001)
    qs = grouped.quantiles(QS)
    for g in (0, 17, 4999):
        np.testing.assert_array_equal(qs[g], Sketch.from_values(values[groups == g]).quantiles(QS))
    assert np.all(np.isnan(qs[5000]))
    assert sum(len(m) for m in grouped.to_maps()) == grouped.keys.size


# ---------------------------------------------------------------- edge cases


def test_zero_negative_and_non_finite_values_are_counted_not_bucketed() -> None:
    values = [-5.0, -0.001, 0.0, -0.0, float("nan"), float("inf"), float("-inf"), 10.0, 20.0, 30.0]
    s = Sketch.from_values(values)
    assert s.nonpositive_count == 7
    assert s.bucketed_count == 3
    assert s.count == len(values)
    # quantiles cover the positive values only
    assert s.quantile(0.0) == pytest.approx(10.0, rel=0.01)
    assert s.quantile(0.5) == pytest.approx(20.0, rel=0.01)
    assert s.quantile(1.0) == pytest.approx(30.0, rel=0.01)
    only_bad = Sketch.from_values([0.0, -1.0])
    assert only_bad.nonpositive_count == 2 and only_bad.to_map() == {}
    assert np.isnan(only_bad.quantile(0.5))


def test_empty_input() -> None:
    s = Sketch.from_values([])
    assert s == Sketch.empty()
    assert s.count == 0 and s.to_map() == {}
    assert np.all(np.isnan(s.quantiles(QS)))
    g = GroupedSketches.from_batch(np.empty(0, np.int64), np.empty(0))
    assert g.n_groups == 0 and g.quantiles(QS).shape == (0, len(QS)) and g.to_maps() == []
    assert GroupedSketches.from_batch(np.empty(0, np.int64), np.empty(0), n_groups=2).to_maps() == [{}, {}]


def test_single_sample() -> None:
    s = Sketch.from_values([123.456])
    assert s.count == 1 and len(s.to_map()) == 1
    assert np.all(_rel_err(s.quantiles(QS), 123.456) <= 0.01 + EPS)


def test_six_orders_of_magnitude() -> None:
    rng = np.random.default_rng(42)
    values = 10.0 ** rng.uniform(-3, 3, size=300_000)  # 1 µs .. 1 s, in ms
    s = Sketch.from_values(values)
    qs = (0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0)
    assert np.all(_rel_err(s.quantiles(qs), np.quantile(values, qs, method="lower")) <= 0.01 + EPS)
    # about log(1e6) / log(gamma) buckets: the size bound that makes the sketch cheap
    assert len(s.to_map()) <= int(np.ceil(np.log(1e6) / np.log(gamma_for(0.01)))) + 1


def test_from_map_round_trip_and_zero_counts_dropped() -> None:
    s = Sketch.from_values([0.5, 1.0, 2.0, 2.0, 1e-3, 1e3, -1.0])
    assert Sketch.from_map(s.to_map(), s.gamma, s.nonpositive_count) == s
    assert Sketch.from_map({5: 0, 3: 2}, s.gamma).to_map() == {3: 2}
