"""Bottom-k sampling by call hash, and the sieve that lets decoding workers send only what can be sampled."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from processors.core.drift import BottomK, KeyRegistry, PrioritySieve, call_priority


def test_priority_is_stable_and_spreads_over_64_bits() -> None:
    assert call_priority("a" * 32, "b" * 16) == call_priority("a" * 32, "b" * 16)
    # the value of blake2b-64 of "trace/span", computed independently of the module
    import hashlib

    assert call_priority("t", "s") == int.from_bytes(hashlib.blake2b(b"t/s", digest_size=8).digest(), "big")
    values = np.array([call_priority(f"{i:032x}", f"{i:016x}") for i in range(20_000)], dtype=np.float64) / 2.0**64
    assert stats.kstest(values, "uniform").pvalue > 1e-3


def test_bottom_k_is_a_uniform_sample() -> None:
    n, k, runs = 50, 10, 4000
    counts = np.zeros(n)
    for run in range(runs):
        sample: BottomK[int] = BottomK(k)
        for i in range(n):
            sample.offer(call_priority(f"run-{run}", f"span-{i}"), i)
        assert len(sample) == k
        counts[list(sample)] += 1
    # every item is kept with probability k/n
    assert stats.chisquare(counts, np.full(n, runs * k / n)).pvalue > 1e-3


def test_bottom_k_keeps_the_smallest_priorities_once() -> None:
    rng = np.random.default_rng(1)
    priorities = [int(p) for p in rng.integers(0, 2**63, size=500)]
    sample: BottomK[int] = BottomK(20)
    for p in priorities + priorities[:100]:  # redelivered calls have the same priority
        sample.offer(p, p)
    assert sorted(sample.items) == sorted(set(priorities))[:20]
    assert not sample.admits(sorted(priorities)[0])  # kept already
    assert not sample.admits(sorted(priorities)[25])  # not among the 20 smallest


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6)), max_size=400),  # (key, call id), duplicates allowed
    st.integers(1, 4),  # workers
    st.integers(1, 30),  # sample size
    st.integers(1, 4),  # keys a sieve remembers (fewer than the keys: forgetting must stay exact)
    st.randoms(use_true_random=False),
)
def test_sieved_calls_give_the_same_sample_as_all_calls(calls, workers, k, sieve_keys, random) -> None:
    """Whichever worker sees a call, in whatever order, with duplicates and forgotten keys,
    the drift worker's sample from the calls the sieves let through is the bottom-k of all calls."""
    sieves = [PrioritySieve[int](k, sieve_keys) for _ in range(workers)]
    received: dict[int, BottomK[int]] = {}
    sent = 0
    for key, call_id in calls:
        priority = call_priority("trace", str(call_id))
        if random.choice(sieves).passes(key, priority):
            sent += 1
            received.setdefault(key, BottomK(k)).offer(priority, call_id)
    for key in {key for key, _ in calls}:
        everything = {call_priority("trace", str(c)): c for kk, c in calls if kk == key}
        expected = [everything[p] for p in sorted(everything)[:k]]
        assert sorted(received[key].items) == sorted(expected)
    assert sent <= len(calls)


def test_sieve_sends_about_k_times_log_n_over_k() -> None:
    n, k = 200_000, 200
    sieve: PrioritySieve[str] = PrioritySieve(k, 8)
    sent = sum(sieve.passes("key", call_priority("t", str(i))) for i in range(n))
    expected = k * (1 + math.log(n / k))  # records of a stream of n uniform draws entering a bottom-k
    assert 0.8 * expected < sent < 1.2 * expected


def test_key_registry_lru_eviction() -> None:
    reg: KeyRegistry[str, list[int]] = KeyRegistry(2)
    a, ev = reg.get_or_create("a", list)
    assert ev is None
    reg.get_or_create("b", list)
    assert reg.get("a") is a  # "a" becomes most recent
    _, ev = reg.get_or_create("c", list)
    assert ev is not None and ev[0] == "b"
    assert reg.evicted == 1 and len(reg) == 2 and reg.keys() == ["a", "c"]
    assert reg.pop("a") is a and reg.evicted == 1
