"""Drift statistics against scipy / hand computations, and the window decision rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from processors.core.drift import (
    DriftConfig,
    DriftResult,
    WindowSample,
    chi2_test,
    control_across_keys,
    cosine_centroid_distance,
    decide_window,
    drifted_component_share,
    evaluate_window,
    holm_adjust,
    hotelling_test,
    jensen_shannon,
    ks_test,
    mmd2_rbf,
    psi,
    wasserstein_norm,
    window_drifted,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_ks_equals_scipy(rng: np.random.Generator) -> None:
    ref, cur = rng.normal(0, 1, 300), rng.normal(0.2, 1, 250)
    expected = stats.ks_2samp(ref, cur)
    got = ks_test(ref, cur, signal="x", alpha=0.05)
    assert got.value == expected.statistic and got.p_value == expected.pvalue
    assert (got.n_ref, got.n_cur, got.threshold) == (300, 250, 0.05)


def test_ks_drops_nan() -> None:
    ref = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    cur = np.array([2.5, np.nan, 3.5, 9.0])
    got = ks_test(ref, cur)
    expected = stats.ks_2samp([1.0, 2.0, 3.0, 4.0], [2.5, 3.5, 9.0])
    assert (got.value, got.p_value, got.n_ref, got.n_cur) == (expected.statistic, expected.pvalue, 4, 3)


def test_wasserstein_normed_by_reference_std(rng: np.random.Generator) -> None:
    ref, cur = rng.lognormal(5, 0.4, 400), rng.lognormal(5.1, 0.4, 300)
    got = wasserstein_norm(ref, cur, threshold=0.1)
    assert got.value == pytest.approx(stats.wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12)
    assert got.drifted == (got.value >= 0.1) and got.p_value is None
    # constant reference: Evidently's floor of 0.001 on the norm
    assert wasserstein_norm([2.0] * 10, [3.0] * 10).value == pytest.approx(1.0 / 0.001)


def test_psi_hand_computation() -> None:
    # Reference 1..8, 4 bins: quartile edges 2.75, 4.5, 6.25 -> bins of 2 values each (shares 1/4).
    ref = np.arange(1.0, 9.0)
    cur = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 6.0, 8.0])  # shares 5/8, 0, 2/8, 1/8
    r = np.array([0.25, 0.25, 0.25, 0.25])
    c = np.array([5 / 8, 1e-4, 2 / 8, 1 / 8])  # the empty bin gets epsilon
    expected = float(np.sum((r - c) * np.log(r / c)))
    got = psi(ref, cur, bins=4, epsilon=1e-4, threshold=0.2)
    assert got.value == pytest.approx(expected, rel=1e-12)
    assert got.drifted
    assert psi(ref, ref, bins=4).value == 0.0


def test_psi_bins_are_fixed_on_reference() -> None:
    ref = np.arange(100.0)
    far = np.full(50, 1000.0)  # everything above the last reference edge: top bin only
    r_top = 0.1
    expected = (
        (1e-4 - r_top) * 0
        + sum((0.1 - 1e-4) * np.log(0.1 / 1e-4) for _ in range(9))
        + (r_top - 1.0) * np.log(r_top / 1.0)
    )
    assert psi(ref, far, bins=10).value == pytest.approx(expected, rel=1e-12)


def test_chi2_equals_scipy_contingency(rng: np.random.Generator) -> None:
    cats = np.array(["stop", "length", "tool_call"])
    ref = cats[rng.choice(3, 400, p=[0.8, 0.15, 0.05])]
    cur = cats[rng.choice(3, 350, p=[0.7, 0.2, 0.1])]
    table = np.array([[np.sum(ref == c) for c in sorted(cats)], [np.sum(cur == c) for c in sorted(cats)]])
    expected = stats.chi2_contingency(table, correction=False)
    got = chi2_test(ref, cur, signal="finish_reason")
    assert got.value == pytest.approx(expected.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_chi2_category_only_on_one_side_and_single_category() -> None:
    ref = ["a"] * 50 + ["b"] * 50
    cur = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    expected = stats.chi2_contingency(np.array([[50, 50, 0], [40, 40, 20]]), correction=False)
    assert chi2_test(ref, cur).value == pytest.approx(expected.statistic)
    single = chi2_test(["a"] * 10, ["a"] * 10)
    assert (single.value, single.p_value, single.drifted) == (0.0, 1.0, False)


def test_jensen_shannon_equals_scipy(rng: np.random.Generator) -> None:
    ref = np.where(rng.random(500) < 0.02, "true", "false")
    cur = np.where(rng.random(500) < 0.10, "true", "false")
    p = [np.sum(ref == "false"), np.sum(ref == "true")]
    q = [np.sum(cur == "false"), np.sum(cur == "true")]
    got = jensen_shannon(ref, cur, threshold=0.1)
    assert got.value == pytest.approx(distance.jensenshannon(p, q, base=2), rel=1e-12)
    assert jensen_shannon(ref, ref).value == pytest.approx(0.0, abs=1e-7)


def test_cosine_centroid_distance(rng: np.random.Generator) -> None:
    ref, cur = rng.normal(1, 1, (50, 8)), rng.normal(0.5, 1, (60, 8))
    got = cosine_centroid_distance(ref, cur)
    assert got.value == pytest.approx(distance.cosine(ref.mean(0), cur.mean(0)), rel=1e-12)


def _mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """O(n^2) double loop: unbiased MMD^2, kernel exp(-d^2 / median(d)^2) on the pooled sample."""
    z = np.vstack([x, y])
    dists = [float(np.sum((a - b) ** 2)) for a, b in itertools.combinations(z, 2)]
    h2 = float(np.median(dists))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / h2))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_direct_computation(rng: np.random.Generator) -> None:
    x, y = rng.normal(0, 1, (25, 4)), rng.normal(0.3, 1.2, (18, 4))
    got = mmd2_rbf(x, y, permutations=50, rng=np.random.default_rng(1))
    assert got.value == pytest.approx(_mmd2_direct(x, y), rel=1e-9, abs=1e-12)
    assert (got.n_ref, got.n_cur) == (25, 18)


def test_mmd_permutation_p_value(rng: np.random.Generator) -> None:
    x = rng.normal(0, 1, (60, 5))
    shifted = mmd2_rbf(x, rng.normal(2.0, 1, (60, 5)), permutations=99, rng=np.random.default_rng(3))
    assert shifted.p_value == pytest.approx(1 / 100)
    # The permutation p-value is (1 + #{perm >= obs}) / (P + 1): reproduce it with a direct loop.
    y = rng.normal(0, 1, (40, 5))
    gen = np.random.default_rng(11)
    got = mmd2_rbf(x, y, permutations=30, rng=np.random.default_rng(11))
    pooled = np.vstack([x, y])
    order = gen.permuted(np.tile(np.arange(100), (30, 1)), axis=1)
    null = [_mmd2_direct(pooled[o[:60]], pooled[o[60:]]) for o in order]
    assert got.p_value == pytest.approx((1 + sum(v >= got.value - 1e-12 for v in null)) / 31)
    # same seed, same answer
    assert mmd2_rbf(x, y, permutations=30, rng=np.random.default_rng(11)) == got


def test_mmd_subsamples_to_cap(rng: np.random.Generator) -> None:
    got = mmd2_rbf(rng.normal(size=(300, 3)), rng.normal(size=(200, 3)), permutations=5, max_samples=100)
    assert (got.n_ref, got.n_cur) == (100, 100)


def test_hotelling_matches_textbook_formula(rng: np.random.Generator) -> None:
    x, y = rng.normal(0, 1, (40, 3)), rng.normal(0.4, 1, (30, 3))
    m, n, p = 40, 30, 3
    s = ((m - 1) * np.cov(x, rowvar=False) + (n - 1) * np.cov(y, rowvar=False)) / (m + n - 2)
    diff = x.mean(0) - y.mean(0)
    d2 = float(diff @ np.linalg.inv(s) @ diff)
    t2 = m * n / (m + n) * d2
    f = (m + n - p - 1) / (p * (m + n - 2)) * t2
    test, effect = hotelling_test(x, y, alpha=0.05, threshold=0.4)
    assert test.value == pytest.approx(t2, rel=1e-9)
    assert test.p_value == pytest.approx(stats.f.sf(f, p, m + n - p - 1), rel=1e-9)
    unbiased = d2 * (m + n - p - 3) / (m + n - 2) - p * (1 / m + 1 / n)
    assert effect.value == pytest.approx(np.sqrt(max(unbiased, 0.0)), rel=1e-9)


def test_hotelling_drops_unused_coordinates(rng: np.random.Generator) -> None:
    # Coordinates that are zero everywhere (as in hashed embeddings) make S singular: they are dropped.
    x, y = np.zeros((40, 5)), np.zeros((30, 5))
    x[:, :3], y[:, :3] = rng.normal(0, 1, (40, 3)), rng.normal(0.4, 1, (30, 3))
    test, _ = hotelling_test(x, y)
    expected, _ = hotelling_test(x[:, :3], y[:, :3])
    assert test.value == pytest.approx(expected.value, rel=1e-6)
    assert test.p_value == pytest.approx(expected.p_value, rel=1e-6)


def test_component_share_equals_per_component_ks(rng: np.random.Generator) -> None:
    x = rng.normal(0, 1, (200, 6))
    y = rng.normal(0, 1, (150, 6))
    y[:, :2] += 1.0
    got = drifted_component_share(x, y, components=None, alpha=0.05)
    pvals = [stats.ks_2samp(x[:, j], y[:, j], method="asymp").pvalue for j in range(6)]
    assert got.value == pytest.approx(np.mean(np.array(pvals) < 0.05 / 6))
    assert got.value == pytest.approx(2 / 6)


def test_component_share_with_reference_pca(rng: np.random.Generator) -> None:
    x = rng.normal(0, 1, (300, 10)) * np.arange(10, 0, -1)
    y = rng.normal(0, 1, (300, 10)) * np.arange(10, 0, -1)
    center = x.mean(0)
    _, _, vt = np.linalg.svd(x - center, full_matrices=False)
    px, py = (x - center) @ vt[:3].T, (y - center) @ vt[:3].T
    pvals = [stats.ks_2samp(px[:, j], py[:, j], method="asymp").pvalue for j in range(3)]
    got = drifted_component_share(x, y, components=3, alpha=0.9)
    assert got.value == pytest.approx(np.mean(np.array(pvals) < 0.9 / 3))


def test_holm_adjust_hand_computation() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm_adjust(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def _r(signal: str, statistic: str, value: float, p: float | None, threshold: float) -> DriftResult:
    return DriftResult(signal, statistic, value, p, threshold, False, 100, 100)


def test_decision_needs_significance_and_effect() -> None:
    cfg = DriftConfig(alpha=0.01)
    results = [
        _r("a", "ks", 0.3, 1e-6, 0.01),
        _r("a", "wasserstein_norm", 0.5, None, 0.1),  # significant and material: drifts
        _r("b", "ks", 0.05, 0.5, 0.01),
        _r("b", "wasserstein_norm", 0.3, None, 0.1),  # effect without significance: quiet
        _r("c", "chi2", 40.0, 1e-9, 0.01),
        _r("c", "jensen_shannon", 0.01, None, 0.05),  # significance without effect: quiet
    ]
    decided = {(r.signal, r.statistic): r for r in decide_window(results, cfg)}
    assert decided[("a", "ks")].drifted and decided[("a", "wasserstein_norm")].drifted
    assert not decided[("b", "ks")].drifted and not decided[("b", "wasserstein_norm")].drifted
    assert not decided[("c", "chi2")].drifted and not decided[("c", "jensen_shannon")].drifted
    # Holm over the 3 tests: 1e-9 * 3, then 1e-6 * 2, then 0.5 * 1
    assert decided[("c", "chi2")].p_value == pytest.approx(3e-9)
    assert decided[("a", "ks")].p_value == pytest.approx(2e-6)
    assert decided[("b", "ks")].p_value == pytest.approx(0.5)


def test_control_across_keys_uses_benjamini_hochberg() -> None:
    def window(p: float) -> list[DriftResult]:
        return [
            DriftResult("s", "ks", 0.5, p, 0.005, True, 10, 10),
            DriftResult("s", "wasserstein_norm", 1.0, None, 0.1, True, 10, 10),
        ]

    ps = {"k1": 0.001, "k2": 0.004, "k3": 0.03, "k4": 0.5}
    kept = control_across_keys({k: window(p) for k, p in ps.items()}, fdr=0.05)
    q = stats.false_discovery_control(list(ps.values()), method="bh")
    assert {k: window_drifted(v) for k, v in kept.items()} == {k: bool(qk <= 0.05) for k, qk in zip(ps, q, strict=True)}
    assert window_drifted(kept["k1"]) and not window_drifted(kept["k4"])


def test_evaluate_window_end_to_end(rng: np.random.Generator) -> None:
    def sample(shift: float) -> WindowSample:
        return WindowSample(
            answer_embeddings=rng.normal(0, 1, (200, 16)),
            scalars={"answer_length": rng.lognormal(6 + shift, 0.3, 200), "ttft_ms": np.full(200, np.nan)},
            categoricals={"refusal": np.where(rng.random(200) < 0.05, "true", "false")},
        )

    results = evaluate_window(sample(0.0), sample(0.5), DriftConfig())
    by_signal = {(r.signal, r.statistic): r for r in results}
    assert ("ttft_ms", "ks") not in by_signal  # all NaN: below min_samples, not compared
    assert by_signal[("answer_length", "ks")].drifted
    assert not by_signal[("refusal", "chi2")].drifted
    assert {s for s, _ in by_signal} == {"answer_embedding", "answer_length", "refusal"}
    assert evaluate_window(WindowSample(), WindowSample(), DriftConfig()) == []


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DriftConfig(alpha=0.0)
    with pytest.raises(ValueError, match="psi_bins"):
        DriftConfig(psi_bins=1)
