"""Benchmark: drift statistics for one key's window, and the memory of one live key.

(1) ``evaluate_window`` on 1,000 reference and 1,000 current calls: 384-dim answer embeddings
    plus 4 scalar and 3 categorical signals, default ``DriftConfig`` (200 MMD permutations);
    also each embedding statistic alone. Median of ``--repeat`` runs, with BLAS at its default
    thread count and held to 1 thread (threadpoolctl).
(2) Memory of one live key: a ``BottomK`` sample of 1,000 ``CallSignals`` holding a 384-dim float32
    answer embedding each, measured with tracemalloc (Python objects and numpy buffers).

Run: ``.venv/bin/python benchmarks/bench_drift.py`` (``--repeat 3`` for a quick run).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import median_seconds
from processors.core.drift import (
    BottomK,
    CallSignals,
    DriftConfig,
    WindowSample,
    call_priority,
    cosine_centroid_distance,
    drifted_component_share,
    evaluate_window,
    hashing_embedding,
    hotelling_test,
    mmd2_rbf,
)

DIM = 384


def _window(rng: np.random.Generator, n: int, factor: np.ndarray, mean: np.ndarray) -> WindowSample:
    return WindowSample(
        answer_embeddings=(mean + rng.standard_normal((n, DIM)) @ factor.T).astype(np.float32),
        scalars={
            "answer_length": np.round(rng.lognormal(np.log(800), 0.35, n)),
            "output_tokens": np.round(rng.lognormal(np.log(200), 0.35, n)),
            "retrieval_score": rng.normal(0.7, 0.15, n),
            "ttft_ms": rng.lognormal(np.log(400), 0.5, n),
        },
        categoricals={
            "finish_reason": np.array(["stop", "length"])[rng.choice(2, n, p=[0.95, 0.05])],
            "refusal": np.where(rng.random(n) < 0.02, "true", "false"),
            "empty_retrieval": np.where(rng.random(n) < 0.03, "true", "false"),
        },
    )


def bench_window(n: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    eig = 1.0 / np.arange(1, DIM + 1)
    factor = basis * np.sqrt(eig / eig.mean())
    mean = rng.standard_normal(DIM)
    ref, cur = _window(rng, n, factor, mean), _window(rng, n, factor, mean)
    cfg = DriftConfig()
    ref_answers, cur_answers = ref.answer_embeddings, cur.answer_embeddings
    assert ref_answers is not None and cur_answers is not None
    parts: dict[str, Callable[[], object]] = {
        "evaluate_window (all statistics, all signals)": lambda: evaluate_window(ref, cur, cfg),
        "  mmd2_rbf (200 permutations)": lambda: mmd2_rbf(ref_answers, cur_answers, rng=np.random.default_rng(0)),
        "  hotelling_test": lambda: hotelling_test(ref_answers, cur_answers),
        "  drifted_component_share (PCA 32)": lambda: drifted_component_share(ref_answers, cur_answers),
        "  cosine_centroid_distance": lambda: cosine_centroid_distance(ref_answers, cur_answers),
    }
    print(f"window: {n} x {DIM} reference and current, median of {repeat}")
    for label, limit in (("default BLAS threads", None), ("BLAS 1 thread", 1)):
        with threadpool_limits(limits=limit, user_api="blas"):
            print(f" {label}:")
            for name, fn in parts.items():
                print(f"  {name:<48} {1000 * median_seconds(fn, repeat, warmup=True):8.1f} ms")


def bench_memory(capacity: int) -> None:
    rng = np.random.default_rng(1)
    words = np.array("the refund order account card delivery password reset invoice plan upgrade cancel".split())

    def make() -> CallSignals:
        text = " ".join(words[rng.integers(0, words.size, 120)])
        return CallSignals(
            answer_length=len(text),
            refusal=False,
            finish_reason="stop",
            answer_embedding=hashing_embedding(text, DIM),
            span_embedding=None,
            embedding_model="",
            retrieval_documents=5,
            retrieval_empty=False,
            retrieval_score_mean=0.71,
            retrieval_score_max=0.93,
        )

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    reservoir: BottomK[CallSignals] = BottomK(capacity)
    for i in range(capacity):
        reservoir.offer(call_priority("t", str(i)), make())  # transient text is freed; what stays is what the key holds
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(reservoir) == capacity
    raw = capacity * DIM * 4
    print(f"memory per live key: reservoir of {capacity} calls, {DIM}-dim float32 embeddings")
    print(f"  traced: {held / 1e6:.2f} MB ({held / capacity:.0f} B per call; embedding payload {raw / 1e6:.2f} MB)")

    start = time.perf_counter()
    r: BottomK[int] = BottomK(capacity)
    offered = 1_000_000
    for i in range(offered):
        r.offer(call_priority("trace", str(i)), i)
    took = time.perf_counter() - start
    print(
        f"  call_priority + offer(): {offered / took / 1e6:.2f} M calls/s on one core "
        f"({offered:,} offers, {capacity} kept)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per side of the window")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    blas = [(i.get("internal_api"), i.get("num_threads"), i.get("architecture")) for i in threadpool_info()]
    print(f"BLAS: {blas}")
    bench_window(args.calls, args.repeat)
    bench_memory(args.calls)


if __name__ == "__main__":
    main()
