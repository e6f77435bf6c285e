"""Acceptance bar of the drift statistics: false alarms and detection power on simulated windows.

Each window compares 500 reference calls with 500 current calls, all signals at once, through
`evaluate_window` with the default `DriftConfig` (so Holm over the window's tests and the effect
gates are what is measured). Seeded: deterministic.

Simulated world (one key):
- answer embeddings, 384 dims: ``mu + z @ A.T`` with a covariance whose eigenvalues decay as
  ``j ** -1.2`` (anisotropic, as sentence embeddings are: the top component holds 25 % of the
  variance, the top 10 hold 61 %), in a random basis, scaled so the per-dimension variance
  averages ``sigma^2 = 1``. Embedding drift, literally: ``shift = 0.5 * sigma * u``, ``u`` a fresh
  random unit vector per window, i.e. ``0.5 / sqrt(384) = 0.026 sigma`` per coordinate.
  What that means: with isotropic noise no test can find it at n = 500 (the centroid
  difference's noise has squared norm ``384 * 2/500 = 1.5 sigma^2`` against the shift's
  ``0.25 sigma^2``: Hotelling's noncentrality is 62.5 on 384 degrees of freedom). A random
  direction lies mostly where an anisotropic cloud is thin, so the noncentrality becomes
  ``62.5 * mean(1 / eigenvalue)``: 380 here (power ~100 %), 204 for a ``1/j`` spectrum, where
  the measured power is 93-95 % at the window's family-wise level, i.e. at the limit of the bar.
  The bar therefore holds for clouds at least this anisotropic; that is an assumption about the
  embedding model, not a property of the statistics.
- answer length: lognormal, median 800 chars, log-sd 0.35; drift multiplies lengths by 1.2
  (mean +20 %). Output tokens follow the length (chars / 4, 10 % noise).
- retrieval score: normal(0.70, 0.15); drift subtracts 0.1 (spread unchanged).
- TTFT: lognormal, median 400 ms, log-sd 0.5.
- finish reason: stop 95 % / length 5 %; drift: length 15 %.
- refusal flag: 2 %; drift: 10 %. Empty retrieval flag: 3 %.

Time budget: MMD runs with 1 permutation here instead of 200. Justified: the MMD permutation
p-value takes no part in any decision (it is reported only, see processors/core/drift/statistics.py),
and the MMD^2 value, which is an effect gate, does not depend on the permutations. BLAS is held
to one thread: the 384 x 384 factorisations are faster single-threaded, and a loaded machine
otherwise makes OpenBLAS threads spin.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from processors.core.drift import DriftConfig, DriftResult, WindowSample, evaluate_window, window_drifted

DIM = 384
N = 500
NULL_WINDOWS = 500
SHIFT_WINDOWS = 200
CONFIG = DriftConfig(mmd_permutations=1)
FINISH = np.array(["stop", "length"])


@pytest.fixture(scope="module", autouse=True)
def _single_thread_blas() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class World:
    """The simulated key: fixed embedding distribution, per-window random samples."""

    def __init__(self, seed: int = 20261126) -> None:
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        eigenvalues = np.arange(1, DIM + 1) ** -1.2
        eigenvalues /= eigenvalues.mean()  # average per-dimension variance sigma^2 = 1
        self.sigma = 1.0
        self.factor = basis * np.sqrt(eigenvalues)  # covariance = factor @ factor.T
        mean = rng.standard_normal(DIM)
        self.mean = mean * (2.0 * np.sqrt(DIM) / np.linalg.norm(mean))

    def window(self, rng: np.random.Generator, shift: str | None = None, embeddings: bool = True) -> WindowSample:
        n = N
        emb = None
        if embeddings:
            emb = self.mean + rng.standard_normal((n, DIM)) @ self.factor.T
            if shift == "embedding":
                u = rng.standard_normal(DIM)
                emb = emb + 0.5 * self.sigma * (u / np.linalg.norm(u))
        length = np.round(rng.lognormal(np.log(800.0), 0.35, n) * (1.2 if shift == "length" else 1.0))
        tokens = np.round(length / 4.0 * rng.lognormal(0.0, 0.1, n))
        score = rng.normal(0.70 - (0.1 if shift == "retrieval" else 0.0), 0.15, n)
        ttft = rng.lognormal(np.log(400.0), 0.5, n)
        finish = FINISH[rng.choice(2, n, p=[0.85, 0.15] if shift == "finish" else [0.95, 0.05])]
        refusal = np.where(rng.random(n) < (0.10 if shift == "refusal" else 0.02), "true", "false")
        empty = np.where(rng.random(n) < 0.03, "true", "false")
        return WindowSample(
            answer_embeddings=emb,
            scalars={"answer_length": length, "output_tokens": tokens, "retrieval_score": score, "ttft_ms": ttft},
            categoricals={"finish_reason": finish, "refusal": refusal, "empty_retrieval": empty},
        )


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _windows(world: World, seed: int, count: int, shift: str | None, embeddings: bool) -> list[list[DriftResult]]:
    rng = np.random.default_rng(seed)
    return [
        evaluate_window(world.window(rng, None, embeddings), world.window(rng, shift, embeddings), CONFIG)
        for _ in range(count)
    ]


def test_no_drift_windows_rarely_flagged(world: World) -> None:
    windows = _windows(world, 1, NULL_WINDOWS, None, embeddings=True)
    assert len(windows) >= 500
    statistics = {(r.signal, r.statistic) for r in windows[0]}
    assert len(statistics) == 5 + 4 * 3 + 3 * 2  # every statistic of every signal was evaluated
    flagged = sum(window_drifted(w) for w in windows)
    assert flagged / len(windows) <= 0.01


@pytest.mark.parametrize(
    ("shift", "signal", "embeddings"),
    [
        ("embedding", "answer_embedding", True),
        ("length", "answer_length", False),
        ("refusal", "refusal", False),
        ("retrieval", "retrieval_score", False),
        ("finish", "finish_reason", False),
    ],
)
def test_shift_detected(world: World, shift: str, signal: str, embeddings: bool) -> None:
    # Windows of the non-embedding shifts leave out the (unshifted) embedding signal to save
    # time: their Holm family has 7 tests instead of 8 (per-test level 0.005/7 instead of
    # 0.005/8 for the smallest p-value); the embedding shift runs with the full family.
    seed = {"embedding": 2, "length": 3, "refusal": 4, "retrieval": 5, "finish": 6}[shift]
    windows = _windows(world, seed, SHIFT_WINDOWS, shift, embeddings)
    detected = sum(any(r.drifted for r in w if r.signal == signal) for w in windows)
    assert detected / len(windows) >= 0.95, f"{shift}: detected in {detected} of {len(windows)} windows"
