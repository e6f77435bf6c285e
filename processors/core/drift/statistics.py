"""Two-sample drift statistics for one drift window against its reference, and the window decision.

Why pure numpy/scipy functions: the drift stage calls them once per (key, window) on
reservoir samples; they hold no state, so they are tested against scipy and against
simulated windows (tests/test_drift_calibration.py) without a broker.

Statistics per signal kind (names are the ``statistic`` column of ``llm_drift``):

- scalars (answer length, output tokens, retrieval score, TTFT):
  ``ks`` (scipy.stats.ks_2samp; ``threshold`` applies to the p-value),
  ``wasserstein_norm`` (effect size), ``psi`` (effect size, quantile bins fixed on the reference);
- categoricals (finish reason, refusal flag, empty retrieval):
  ``chi2`` (scipy.stats.chi2_contingency on the 2 x k table; ``threshold`` applies to the p-value),
  ``jensen_shannon`` (effect size, scipy.spatial.distance.jensenshannon, base 2);
- embeddings (n x d): ``hotelling_t2`` (two-sample Hotelling test of the centroids; ``threshold``
  applies to the p-value), ``mahalanobis_centroid_distance`` (its bias-corrected effect size),
  ``mmd2_rbf`` (unbiased MMD^2, RBF kernel, median heuristic; effect size, with its permutation
  p-value reported but left out of the decision: with P permutations it cannot go below
  ``1/(P+1)``, far above the per-test levels of step 1 below), ``cosine_centroid_distance`` and
  ``drifted_component_share`` (effect sizes).

Why Hotelling next to MMD: a centroid shift of ``0.5 * sigma`` along a random unit direction of a
384-dim space moves each coordinate by ``0.5 * sigma / sqrt(384) ~ 0.026 sigma``. Euclidean
statistics (MMD with a median-heuristic RBF kernel, centroid cosine/euclidean distance) see
``||shift||^2 = 0.25 sigma^2`` against sampling noise of the centroid difference of
``d * sigma^2 * (1/m + 1/n) = 1.5 sigma^2`` (m = n = 500), so they cannot find it. Real embedding
clouds are anisotropic, and a random direction then lies mostly where the cloud is thin: the
Mahalanobis geometry (Hotelling) sees it. Hotelling's p-value is analytic (F distribution), so
it survives multiple-testing control, which a 200-permutation p-value (floor ``1/201``) cannot.

Window decision (``decide_window``), the rule that keeps distance-only statistics quiet on noise:

1. Holm's step-down over the p-values of the window's tests (``ks``, ``chi2``,
   ``hotelling_t2`` of all signals): family-wise error ``alpha`` per window. ``p_value`` of these
   results in the decided window is the Holm-adjusted one.
2. A signal is *significant* when any of its tests rejects after step 1, and *material* when
   any of its effect sizes reaches its threshold.
3. A test result is drifted when it rejects and its signal is material; an effect-size result
   is drifted when it reaches its threshold and its signal is significant.

Across keys (``control_across_keys``): each window gets one p-value, the smallest
Holm-adjusted one (a valid p-value for "nothing drifted"); Benjamini-Hochberg over the keys of
one drift window at false discovery rate ``cross_key_fdr`` keeps or clears a key's flags.

Defaults start from Evidently's (KS p < 0.05, Wasserstein 0.1, JS 0.1, MMD^2 0.015, PSI 0.2,
distance 0.2, drifted share 0.2) and were tuned on the calibration windows
(n = 500 calls per side): ``alpha`` 0.05 -> 0.005 (at most 1 % of no-drift windows flagged) and
``js_threshold`` 0.1 -> 0.05 (a refusal rate of 2 % -> 10 % has JS distance ~0.15 but falls under
0.1 in ~6 % of windows of 500 calls).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg, stats
from scipy.spatial import distance

__all__ = [
    "DriftResult",
    "DriftConfig",
    "WindowSample",
    "P_VALUE_THRESHOLD_STATISTICS",
    "ks_test",
    "wasserstein_norm",
    "psi",
    "chi2_test",
    "jensen_shannon",
    "cosine_centroid_distance",
    "mmd2_rbf",
    "drifted_component_share",
    "hotelling_test",
    "holm_adjust",
    "decide_window",
    "evaluate_window",
    "window_drifted",
    "window_p_value",
    "control_across_keys",
]

# Statistics whose ``threshold`` is a significance level compared with the p-value; every other
# statistic's threshold applies to its value (an effect size).
P_VALUE_THRESHOLD_STATISTICS: Final = frozenset({"ks", "chi2", "hotelling_t2"})

K = TypeVar("K", bound=Hashable)

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class DriftResult:
    """One statistic of one signal for one window: a row of ``llm_drift``."""

    signal: str
    statistic: str
    value: float
    p_value: float | None  # None for pure effect sizes
    threshold: float  # significance level (P_VALUE_THRESHOLD_STATISTICS) or effect-size threshold
    drifted: bool
    n_ref: int
    n_cur: int


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """Thresholds and knobs of the drift statistics (defaults tuned, see module docstring)."""

    alpha: float = 0.005  # family-wise error per window (Holm over all its p-values); Evidently: 0.05
    wasserstein_threshold: float = 0.1  # normed Wasserstein (Evidently default)
    psi_threshold: float = 0.2  # Evidently's example threshold; 0.2 = "significant shift" in credit scoring
    psi_bins: int = 10  # quantile bins fixed on the reference
    psi_epsilon: float = 1e-4  # share given to an empty bin (Evidently uses 0.0001)
    js_threshold: float = 0.05  # Jensen-Shannon distance, base 2; Evidently: 0.1
    mmd2_threshold: float = 0.015  # unbiased MMD^2 (Evidently's MMD embedding drift default)
    mmd_permutations: int = 200
    mmd_max_samples: int = 1000  # per side: larger samples are subsampled (kernel matrix is O(n^2))
    cosine_threshold: float = 0.2  # centroid cosine distance (Evidently's distance method default)
    component_share_threshold: float = 0.2  # share of drifted components (Evidently's ratio method)
    component_alpha: float = 0.05  # per-vector level of the component KS tests, Bonferroni within the vector
    component_pca: int | None = 32  # PCA components fitted on the reference; None = raw coordinates
    mahalanobis_threshold: float = 0.4  # bias-corrected Mahalanobis distance of the centroids
    mean_test_max_components: int | None = None  # cap on the Hotelling dimension; None = as many as the sample allows
    min_samples: int = 30  # a signal with fewer values on either side is not compared
    cross_key_fdr: float = 0.05  # Benjamini-Hochberg across the keys of one drift window
    seed: int = 0  # permutation / subsampling generator seed (results are reproducible)

    def __post_init__(self) -> None:
        for name in ("alpha", "component_alpha", "cross_key_fdr"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        for name in (
            "wasserstein_threshold",
            "psi_threshold",
            "js_threshold",
            "mmd2_threshold",
            "cosine_threshold",
            "component_share_threshold",
            "mahalanobis_threshold",
            "psi_epsilon",
        ):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be > 0")
        if self.psi_bins < 2:
            raise ValueError("psi_bins must be >= 2")
        if self.mmd_permutations < 1 or self.mmd_max_samples < 2 or self.min_samples < 2:
            raise ValueError("mmd_permutations >= 1, mmd_max_samples >= 2 and min_samples >= 2 are required")
        if self.component_pca is not None and self.component_pca < 1:
            raise ValueError("component_pca must be >= 1 or None")
        if self.mean_test_max_components is not None and self.mean_test_max_components < 1:
            raise ValueError("mean_test_max_components must be >= 1 or None")


@dataclass(frozen=True, slots=True)
class WindowSample:
    """The signals of the calls sampled for one key and window (reference or current).

    Scalars may hold NaN for calls without the value (e.g. TTFT of a non-streamed call);
    NaNs are dropped per signal. Categoricals hold strings (flags as "true"/"false").
    """

    answer_embeddings: NDArray[np.floating] | None = None  # n x d
    query_embeddings: NDArray[np.floating] | None = None  # n x d, carried by spans (query / retrieval)
    scalars: Mapping[str, ArrayLike] = field(default_factory=dict)
    categoricals: Mapping[str, ArrayLike] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- scalars


def _finite(values: ArrayLike) -> FloatArray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def ks_test(reference: ArrayLike, current: ArrayLike, *, signal: str = "", alpha: float = 0.05) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov test (scipy's, exact p-value for small samples)."""
    ref, cur = _finite(reference), _finite(current)
    res = stats.ks_2samp(ref, cur)
    p = float(res.pvalue)
    return DriftResult(signal, "ks", float(res.statistic), p, alpha, p < alpha, ref.size, cur.size)


def wasserstein_norm(
    reference: ArrayLike, current: ArrayLike, *, signal: str = "", threshold: float = 0.1
) -> DriftResult:
    """Wasserstein-1 distance divided by the reference standard deviation.

    Same definition as Evidently's ``wasserstein`` stattest
    (evidently/calculations/stattests/wasserstein_distance_norm.py):
    ``norm = max(np.std(reference), 0.001)``; ``stats.wasserstein_distance(ref, cur) / norm``;
    drift when ``>= threshold`` (default 0.1). Scale-free, so one threshold fits lengths and scores.
    """
    ref, cur = _finite(reference), _finite(current)
    norm = max(float(np.std(ref)), 0.001)
    value = float(stats.wasserstein_distance(ref, cur)) / norm
    return DriftResult(signal, "wasserstein_norm", value, None, threshold, value >= threshold, ref.size, cur.size)


def psi(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    signal: str = "",
    threshold: float = 0.2,
    bins: int = 10,
    epsilon: float = 1e-4,
) -> DriftResult:
    """Population stability index ``sum((r - c) * ln(r / c))`` over quantile bins of the reference.

    Bin edges are the reference's ``1/bins .. (bins-1)/bins`` quantiles (duplicates merged, so
    discrete data gets fewer bins); bins are ``(-inf, e1], (e1, e2], ..., (e_last, inf)``. Empty bin
    shares become ``epsilon`` so the logarithm stays finite.
    """
    ref, cur = _finite(reference), _finite(current)
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = edges.size + 1
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=n_bins) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=n_bins) / cur.size
    r = np.where(r == 0.0, epsilon, r)
    c = np.where(c == 0.0, epsilon, c)
    value = float(np.sum((r - c) * np.log(r / c)))
    return DriftResult(signal, "psi", value, None, threshold, value >= threshold, ref.size, cur.size)


# ------------------------------------------------------------------------------------ categoricals


def _contingency(reference: ArrayLike, current: ArrayLike) -> tuple[NDArray[np.int64], int, int]:
    """2 x k table of category counts (categories seen on either side, sorted)."""
    ref = np.asarray(reference).astype(str).ravel()
    cur = np.asarray(current).astype(str).ravel()
    categories, codes = np.unique(np.concatenate([ref, cur]), return_inverse=True)
    k = categories.size
    table = np.vstack([np.bincount(codes[: ref.size], minlength=k), np.bincount(codes[ref.size :], minlength=k)])
    return table.astype(np.int64), ref.size, cur.size


def chi2_test(reference: ArrayLike, current: ArrayLike, *, signal: str = "", alpha: float = 0.05) -> DriftResult:
    """Pearson's chi-square test of homogeneity on the 2 x k table (scipy's chi2_contingency).

    No Yates continuity correction (``correction=False``): it is known to be conservative and
    cost ~1 point of power on the 2 % -> 10 % refusal calibration at n = 500.

    A single category on both sides gives statistic 0 and p-value 1 (nothing to compare).
    """
    table, n_ref, n_cur = _contingency(reference, current)
    if table.shape[1] < 2:
        return DriftResult(signal, "chi2", 0.0, 1.0, alpha, False, n_ref, n_cur)
    res = stats.chi2_contingency(table, correction=False)
    p = float(res.pvalue)
    return DriftResult(signal, "chi2", float(res.statistic), p, alpha, p < alpha, n_ref, n_cur)


def jensen_shannon(
    reference: ArrayLike, current: ArrayLike, *, signal: str = "", threshold: float = 0.1
) -> DriftResult:
    """Jensen-Shannon distance (square root of the divergence), base 2, between category shares."""
    table, n_ref, n_cur = _contingency(reference, current)
    value = float(distance.jensenshannon(table[0], table[1], base=2.0))
    return DriftResult(signal, "jensen_shannon", value, None, threshold, value >= threshold, n_ref, n_cur)


# -------------------------------------------------------------------------------------- embeddings


def _matrix(values: ArrayLike) -> FloatArray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"embeddings must be an n x d array, got shape {m.shape}")
    return m[np.all(np.isfinite(m), axis=1)]


def cosine_centroid_distance(
    reference: ArrayLike, current: ArrayLike, *, signal: str = "", threshold: float = 0.2
) -> DriftResult:
    """Cosine distance between the two centroids (0 = same direction). Effect size only."""
    ref, cur = _matrix(reference), _matrix(current)
    a, b = ref.mean(axis=0), cur.mean(axis=0)
    value = 0.0 if not (np.any(a) and np.any(b)) else float(distance.cosine(a, b))
    return DriftResult(
        signal, "cosine_centroid_distance", value, None, threshold, value >= threshold, ref.shape[0], cur.shape[0]
    )


def _rbf_pooled_kernel(pooled: FloatArray) -> FloatArray:
    """RBF kernel ``exp(-d^2 / h^2)`` with ``h`` the median pairwise distance of the pooled sample.

    ``gamma = 1 / median(d)^2`` is Evidently's MMD convention, which its 0.015 threshold refers to.
    """
    sq = np.einsum("ij,ij->i", pooled, pooled)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (pooled @ pooled.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    h2 = float(np.median(d2[np.triu_indices_from(d2, k=1)]))
    if h2 <= 0.0:
        h2 = 1.0  # all points equal: any bandwidth gives MMD 0
    np.multiply(d2, -1.0 / h2, out=d2)
    return np.exp(d2, out=d2)


def _mmd2_unbiased(s_xx: FloatArray, s_xy: FloatArray, s_yy: FloatArray, m: int, n: int) -> FloatArray:
    """Unbiased MMD^2 from block sums of an RBF kernel matrix (diagonal entries are 1)."""
    return (s_xx - m) / (m * (m - 1.0)) + (s_yy - n) / (n * (n - 1.0)) - 2.0 * s_xy / (m * n)


def mmd2_rbf(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    signal: str = "",
    threshold: float = 0.015,
    permutations: int = 200,
    max_samples: int = 1000,
    rng: np.random.Generator | None = None,
) -> DriftResult:
    """Unbiased MMD^2 with an RBF kernel (median heuristic) and a permutation p-value.

    The pooled kernel matrix is computed once; each permutation only re-labels rows, and all
    permutations are evaluated together as one matrix product: with ``A`` the P x N 0/1 matrix
    of rows labelled "reference", ``S_xx = diag(A K A^T)``, ``S_xy = A K 1 - S_xx`` and
    ``S_yy = 1^T K 1 - S_xx - 2 S_xy``. p-value = ``(1 + #{perm >= observed}) / (P + 1)``.
    Each side is subsampled to ``max_samples`` rows (uniformly, without replacement) so the cost
    stays O(max_samples^2 * (d + P)).
    """
    gen = rng if rng is not None else np.random.default_rng(0)
    ref, cur = _matrix(reference), _matrix(current)
    if ref.shape[0] > max_samples:
        ref = ref[gen.choice(ref.shape[0], max_samples, replace=False)]
    if cur.shape[0] > max_samples:
        cur = cur[gen.choice(cur.shape[0], max_samples, replace=False)]
    m, n = ref.shape[0], cur.shape[0]
    kernel = _rbf_pooled_kernel(np.vstack([ref, cur]))
    row_sums = kernel.sum(axis=1)
    total = float(row_sums.sum())
    s_xx = float(kernel[:m, :m].sum())
    s_xy = float(row_sums[:m].sum()) - s_xx
    observed = float(_mmd2_unbiased(np.array(s_xx), np.array(s_xy), np.array(total - s_xx - 2 * s_xy), m, n))

    labels = np.zeros((permutations, m + n))
    order = gen.permuted(np.tile(np.arange(m + n), (permutations, 1)), axis=1)
    np.put_along_axis(labels, order[:, :m], 1.0, axis=1)
    p_xx = np.einsum("pi,pi->p", labels @ kernel, labels)
    p_xy = labels @ row_sums - p_xx
    null = _mmd2_unbiased(p_xx, p_xy, total - p_xx - 2.0 * p_xy, m, n)
    p_value = float((1 + np.count_nonzero(null >= observed - 1e-12)) / (permutations + 1))
    return DriftResult(signal, "mmd2_rbf", observed, p_value, threshold, observed >= threshold, m, n)


def _ks_asymp_columns(ref: FloatArray, cur: FloatArray) -> FloatArray:
    """Two-sided KS p-value of each column, as ``ks_2samp(method="asymp")`` computes it.

    Why not ``ks_2samp(axis=0)``: it loops over columns in Python (~4 ms each for 500 + 500 rows);
    here all columns share one argsort. The statistic is evaluated at the last of each run of
    tied pooled values, as an ECDF difference must be.
    """
    m, n = ref.shape[0], cur.shape[0]
    pooled = np.vstack([ref, cur])
    order = np.argsort(pooled, axis=0, kind="stable")
    values = np.take_along_axis(pooled, order, axis=0)
    from_ref = order < m
    diff = np.cumsum(from_ref, axis=0) / m - np.cumsum(~from_ref, axis=0) / n
    last_of_run = np.ones_like(from_ref)
    last_of_run[:-1] = values[1:] != values[:-1]
    d = np.max(np.where(last_of_run, np.abs(diff), 0.0), axis=0)
    big, small = max(m, n), min(m, n)
    return np.clip(stats.kstwo.sf(d, np.round(big * small / (big + small))), 0.0, 1.0)


def drifted_component_share(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    signal: str = "",
    threshold: float = 0.2,
    components: int | None = 32,
    alpha: float = 0.05,
) -> DriftResult:
    """Share of components whose two-sample KS test rejects at ``alpha / k`` (Bonferroni in the vector).

    With ``components`` set, both samples are first projected on the top principal components of
    the reference (fitted on the reference only, as Evidently's ``pca_components``). KS p-values
    use scipy's asymptotic distribution (``kstwo``), vectorised over components.
    """
    ref, cur = _matrix(reference), _matrix(current)
    if components is not None and components < ref.shape[1]:
        center = ref.mean(axis=0)
        scatter = (ref - center).T @ (ref - center)
        d = scatter.shape[0]
        _, basis = linalg.eigh(scatter, subset_by_index=[d - components, d - 1], check_finite=False)
        ref, cur = (ref - center) @ basis, (cur - center) @ basis
    k = ref.shape[1]
    p_values = _ks_asymp_columns(ref, cur)
    value = float(np.count_nonzero(p_values < alpha / k)) / k
    return DriftResult(
        signal, "drifted_component_share", value, None, threshold, value >= threshold, ref.shape[0], cur.shape[0]
    )


def _mahalanobis_sq(cov: FloatArray, delta: FloatArray, cap: int) -> tuple[float, int]:
    """``delta' cov^-1 delta`` and the dimension used: Cholesky when full rank, else the leading eigenspace."""
    d = cov.shape[0]
    if d <= cap:
        try:
            factor = linalg.cho_factor(cov, check_finite=False)
            solved = linalg.cho_solve(factor, delta, check_finite=False)
            d2 = float(delta @ solved)
            if (
                np.isfinite(d2)
                and d2 >= 0.0
                and float(np.min(np.diag(factor[0]))) > 1e-6 * float(np.max(np.diag(factor[0])))
            ):
                return d2, d
        except linalg.LinAlgError:
            pass
    eigval, eigvec = linalg.eigh(cov, check_finite=False)
    keep_idx = np.flatnonzero(eigval > max(float(eigval[-1]), 1e-300) * 1e-10)[::-1][:cap]
    proj = eigvec[:, keep_idx].T @ delta
    return float(np.sum(proj**2 / eigval[keep_idx])), int(keep_idx.size)


def hotelling_test(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    signal: str = "",
    alpha: float = 0.05,
    threshold: float = 0.4,
    max_components: int | None = None,
) -> tuple[DriftResult, DriftResult]:
    """Two-sample Hotelling T^2 test of the centroids, and the Mahalanobis distance between them.

    Uses the pooled within-sample covariance ``S``. Directions where ``S`` is (numerically)
    singular, e.g. unused coordinates of hashed embeddings, are dropped, and at most
    ``min(max_components, N - 10)`` leading eigen-directions of ``S`` are kept, so that the F
    reference distribution exists: ``F = (N - r - 1) / (r (N - 2)) T^2 ~ F(r, N - r - 1)``.

    Effect size: the Mahalanobis distance with the finite-sample bias removed,
    ``sqrt(max(0, D^2 (N - r - 3) / (N - 2) - r (1/m + 1/n)))`` (unbiased for ``delta' Sigma^-1 delta``
    under normality), so it is near 0 without drift whatever the dimension.
    Returns (``hotelling_t2`` result with value T^2, ``mahalanobis_centroid_distance`` result).
    """
    ref, cur = _matrix(reference), _matrix(current)
    m, n = ref.shape[0], cur.shape[0]
    big_n = m + n
    mean_ref, mean_cur = ref.mean(axis=0), cur.mean(axis=0)
    centered = np.vstack([ref - mean_ref, cur - mean_cur])
    cov = (centered.T @ centered) / (big_n - 2)
    delta = mean_cur - mean_ref
    cap = big_n - 10 if max_components is None else min(max_components, big_n - 10)
    d2, r = _mahalanobis_sq(cov, delta, max(cap, 1))
    t2 = d2 * m * n / big_n
    if big_n - r - 1 > 0:
        f_stat = t2 * (big_n - r - 1) / (r * (big_n - 2))
        p = float(stats.f.sf(f_stat, r, big_n - r - 1))
    else:
        p = 1.0
    d2_unbiased = d2 * (big_n - r - 3) / (big_n - 2) - r * (1.0 / m + 1.0 / n)
    effect = float(np.sqrt(max(d2_unbiased, 0.0)))
    return (
        DriftResult(signal, "hotelling_t2", t2, p, alpha, p < alpha, m, n),
        DriftResult(signal, "mahalanobis_centroid_distance", effect, None, threshold, effect >= threshold, m, n),
    )


# ------------------------------------------------------------------------------ window decision


def holm_adjust(p_values: ArrayLike) -> FloatArray:
    """Holm step-down adjusted p-values (family-wise error control, any dependence)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted


def decide_window(results: Sequence[DriftResult], config: DriftConfig) -> list[DriftResult]:
    """Set ``drifted`` (and Holm-adjusted ``p_value``) for all results of one window.

    See the module docstring: Holm over the window's p-values, then a test drifts only if its
    signal has an effect size over threshold, and an effect size drifts only if its signal has a
    rejecting test.
    """
    tested = [
        (i, r.p_value)
        for i, r in enumerate(results)
        if r.p_value is not None and r.statistic in P_VALUE_THRESHOLD_STATISTICS
    ]
    with_p = [i for i, _ in tested]
    adjusted = holm_adjust([p for _, p in tested])
    adj_by_index = dict(zip(with_p, adjusted.tolist(), strict=True))
    significant: set[str] = set()
    material: set[str] = set()
    for i, r in enumerate(results):
        if i in adj_by_index and adj_by_index[i] < config.alpha:
            significant.add(r.signal)
        if r.statistic not in P_VALUE_THRESHOLD_STATISTICS and r.value >= r.threshold:
            material.add(r.signal)
    decided: list[DriftResult] = []
    for i, r in enumerate(results):
        p_adj = adj_by_index.get(i)
        if r.statistic in P_VALUE_THRESHOLD_STATISTICS:
            flag = p_adj is not None and p_adj < config.alpha and r.signal in material
            decided.append(replace(r, p_value=p_adj, threshold=config.alpha, drifted=flag))
        else:
            flag = r.value >= r.threshold and r.signal in significant
            decided.append(replace(r, drifted=flag))
    return decided


def _scalar_results(name: str, ref: FloatArray, cur: FloatArray, config: DriftConfig) -> list[DriftResult]:
    return [
        ks_test(ref, cur, signal=name, alpha=config.alpha),
        wasserstein_norm(ref, cur, signal=name, threshold=config.wasserstein_threshold),
        psi(ref, cur, signal=name, threshold=config.psi_threshold, bins=config.psi_bins, epsilon=config.psi_epsilon),
    ]


def _embedding_results(
    name: str, ref: FloatArray, cur: FloatArray, config: DriftConfig, rng: np.random.Generator
) -> list[DriftResult]:
    hotelling, mahalanobis = hotelling_test(
        ref,
        cur,
        signal=name,
        alpha=config.alpha,
        threshold=config.mahalanobis_threshold,
        max_components=config.mean_test_max_components,
    )
    return [
        hotelling,
        mahalanobis,
        mmd2_rbf(
            ref,
            cur,
            signal=name,
            threshold=config.mmd2_threshold,
            permutations=config.mmd_permutations,
            max_samples=config.mmd_max_samples,
            rng=rng,
        ),
        cosine_centroid_distance(ref, cur, signal=name, threshold=config.cosine_threshold),
        drifted_component_share(
            ref,
            cur,
            signal=name,
            threshold=config.component_share_threshold,
            components=config.component_pca,
            alpha=config.component_alpha,
        ),
    ]


def evaluate_window(
    reference: WindowSample, current: WindowSample, config: DriftConfig | None = None
) -> list[DriftResult]:
    """All statistics of every signal present on both sides with enough values, decided as a family.

    Signals are compared when both sides have at least ``config.min_samples`` values.
    Deterministic: permutations and subsampling use ``config.seed``.
    """
    cfg = config if config is not None else DriftConfig()
    rng = np.random.default_rng(cfg.seed)
    raw: list[DriftResult] = []
    for name, ref_emb, cur_emb in (
        ("answer_embedding", reference.answer_embeddings, current.answer_embeddings),
        ("query_embedding", reference.query_embeddings, current.query_embeddings),
    ):
        if ref_emb is None or cur_emb is None:
            continue
        ref_m, cur_m = _matrix(ref_emb), _matrix(cur_emb)
        if ref_m.shape[1] != cur_m.shape[1]:
            raise ValueError(f"{name}: reference has {ref_m.shape[1]} dims, current {cur_m.shape[1]}")
        if min(ref_m.shape[0], cur_m.shape[0]) >= cfg.min_samples:
            raw.extend(_embedding_results(name, ref_m, cur_m, cfg, rng))
    for name in sorted(set(reference.scalars) & set(current.scalars)):
        ref_s, cur_s = _finite(reference.scalars[name]), _finite(current.scalars[name])
        if min(ref_s.size, cur_s.size) >= cfg.min_samples:
            raw.extend(_scalar_results(name, ref_s, cur_s, cfg))
    for name in sorted(set(reference.categoricals) & set(current.categoricals)):
        ref_c = np.asarray(reference.categoricals[name]).astype(str).ravel()
        cur_c = np.asarray(current.categoricals[name]).astype(str).ravel()
        if min(ref_c.size, cur_c.size) >= cfg.min_samples:
            raw.append(chi2_test(ref_c, cur_c, signal=name, alpha=cfg.alpha))
            raw.append(jensen_shannon(ref_c, cur_c, signal=name, threshold=cfg.js_threshold))
    return decide_window(raw, cfg)


def window_drifted(results: Sequence[DriftResult]) -> bool:
    """Whether any statistic of the (decided) window drifted."""
    return any(r.drifted for r in results)


def window_p_value(results: Sequence[DriftResult]) -> float:
    """Smallest Holm-adjusted p-value of a decided window (1.0 without tests): its p-value for 'no drift'."""
    ps = [r.p_value for r in results if r.p_value is not None and r.statistic in P_VALUE_THRESHOLD_STATISTICS]
    return float(min(ps)) if ps else 1.0


def control_across_keys(windows: Mapping[K, Sequence[DriftResult]], fdr: float = 0.05) -> dict[K, list[DriftResult]]:
    """Benjamini-Hochberg across the keys of one drift window: clear the flags of keys it does not keep.

    Keeps the false discovery rate among flagged keys at ``fdr`` when thousands of keys are
    compared each window (Holm per key alone would flag ~alpha x keys windows on noise).
    """
    keys = list(windows)
    if not keys:
        return {}
    p = np.array([window_p_value(windows[k]) for k in keys])
    q = stats.false_discovery_control(p, method="bh")
    return {k: [r if q[i] <= fdr else replace(r, drifted=False) for r in windows[k]] for i, k in enumerate(keys)}
