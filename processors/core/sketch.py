"""Relative-error quantile sketch with logarithmic buckets (DDSketch mapping), numpy-vectorised.

Why our own instead of the `ddsketch` package: the latency stage builds sketches for
thousands of (window, key) groups per batch straight from numpy arrays, and the bucket
layout must be exactly the one ClickHouse merges with ``sumMap`` and reads with the SQL
function ``sketch_quantile`` (schemas/migrations/003_llm_latency_1m.sql). The reference
package adds values one by one in Python and serialises to its own protobuf.

Mapping (pure functions below), for relative accuracy ``a``:

- ``gamma = (1 + a) / (1 - a)``
- a value ``v > 0`` goes to bucket ``k = ceil(log(v) / log(gamma))``, i.e. ``gamma**(k-1) < v <= gamma**k``
- bucket ``k`` stands for ``2 * gamma**k / (gamma + 1)``, within ``a`` of every value in it.

Values that cannot go into a log bucket (``<= 0`` from clock skew, NaN, +-inf) are counted
in ``nonpositive_count`` and left out of the quantiles, never dropped silently.

Quantile rank: ``quantile(q)`` returns the representative of the bucket holding the
0-based ``floor(q * (n - 1))``-th smallest bucketed value, the rank numpy calls
``method="lower"``; so the answer is within ``a`` (relative) of
``np.quantile(values[values > 0], q, method="lower")``.

Stored form (what ClickHouse keeps): ``Map(Int32, UInt64)``, bucket key -> count, positive
values only; ``to_map()`` / ``GroupedSketches.to_maps()`` produce it as Python dicts, which
clickhouse-connect inserts directly. Int32, not Int16: keys of tiny or huge doubles
(1e-300 .. 1e300 at 1 %) reach about +-35,000.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DEFAULT_RELATIVE_ACCURACY",
    "gamma_for",
    "bucket_keys",
    "bucket_values",
    "Sketch",
    "GroupedSketches",
]

DEFAULT_RELATIVE_ACCURACY = 0.01

_KEY_BIAS = np.int64(1 << 31)  # shifts an Int32 key into 0 .. 2**32 - 1 inside a combined code
_KEY_MASK = np.int64((1 << 32) - 1)


def gamma_for(relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> float:
    """Bucket growth factor for a relative accuracy in (0, 1)."""
    if not 0.0 < relative_accuracy < 1.0:
        raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
    return (1.0 + relative_accuracy) / (1.0 - relative_accuracy)


def _bucketable(values: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Mask of values that have a log bucket: finite and > 0 (NaN compares False)."""
    return (values > 0.0) & (values < np.inf)


def bucket_keys(values: ArrayLike, gamma: float) -> NDArray[np.int32]:
    """Bucket key ``ceil(log(v) / log(gamma))`` of each value; all values must be finite and > 0."""
    v = np.asarray(values, dtype=np.float64)
    if not bool(np.all(_bucketable(v))):
        raise ValueError("bucket_keys needs finite values > 0")
    return np.ceil(np.log(v) / math.log(gamma)).astype(np.int32)


def bucket_values(keys: ArrayLike, gamma: float) -> NDArray[np.float64]:
    """Representative value ``2 * gamma**k / (gamma + 1)`` of each bucket key."""
    k = np.asarray(keys, dtype=np.float64)
    return 2.0 * np.power(gamma, k) / (gamma + 1.0)


def _reduce_codes(codes: NDArray[np.int64], counts: NDArray[np.uint64]) -> tuple[NDArray[np.int64], NDArray[np.uint64]]:
    """Sum counts of equal codes; result sorted by code. Exact (integer) arithmetic."""
    if codes.size == 0:
        return codes, counts
    order = np.argsort(codes, kind="stable")
    codes_sorted = codes[order]
    starts = np.flatnonzero(np.concatenate(([True], codes_sorted[1:] != codes_sorted[:-1])))
    return codes_sorted[starts], np.add.reduceat(counts[order], starts).astype(np.uint64)


def _count_codes(
    groups: NDArray[np.int64], keys: NDArray[np.int64], n_groups: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint64]]:
    """Count (group, key) pairs; result sorted by group then key.

    Uses a dense ``bincount`` when the (group x key-range) grid is small compared with the
    batch (the usual case: latencies span a few hundred buckets), else a sort.
    """
    if keys.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.uint64)
    kmin = int(keys.min())
    span = int(keys.max()) - kmin + 1
    if n_groups * span <= 4 * keys.size + 65_536:
        cells = np.bincount(groups * span + (keys - kmin), minlength=n_groups * span)
        nz = np.flatnonzero(cells)
        return nz // span, nz % span + kmin, cells[nz].astype(np.uint64)
    codes, counts = np.unique((groups << 32) | (keys + _KEY_BIAS), return_counts=True)
    return codes >> 32, (codes & _KEY_MASK) - _KEY_BIAS, counts.astype(np.uint64)


def _lower_rank_indices(
    cum: NDArray[np.uint64], base: NDArray[np.uint64], n: NDArray[np.uint64], qs: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Index into ``cum`` of the bucket holding rank ``floor(q * (n - 1))`` for each group and q.

    ``cum`` is the running count over all groups' buckets, ``base`` the running count before
    each group. Same float expression ``q * (n - 1)`` as the SQL function, so both agree.
    """
    empty = n == 0
    rank = np.floor(qs[None, :] * (n.astype(np.float64)[:, None] - 1.0))
    rank = np.where(empty[:, None], 0.0, rank).astype(np.uint64)
    idx = np.searchsorted(cum, base[:, None] + rank, side="right")
    return np.minimum(idx, max(cum.size - 1, 0)), empty


def _check_qs(qs: ArrayLike) -> NDArray[np.float64]:
    q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    if q.ndim != 1 or not bool(np.all((q >= 0.0) & (q <= 1.0))):
        raise ValueError("quantiles must be numbers in [0, 1]")
    return q


@dataclass(frozen=True, slots=True, eq=False)
class Sketch:
    """One sketch: sorted unique bucket keys with their counts, plus the unbucketable count."""

    gamma: float
    keys: NDArray[np.int32]
    counts: NDArray[np.uint64]
    nonpositive_count: int = 0

    @classmethod
    def empty(cls, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> Sketch:
        return cls(gamma_for(relative_accuracy), np.empty(0, np.int32), np.empty(0, np.uint64), 0)

    @classmethod
    def from_values(cls, values: ArrayLike, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> Sketch:
        v = np.asarray(values, dtype=np.float64).ravel()
        return GroupedSketches.from_batch(np.zeros(v.size, np.int64), v, 1, relative_accuracy).sketch(0)

    @classmethod
    def from_map(cls, buckets: dict[int, int], gamma: float, nonpositive_count: int = 0) -> Sketch:
        """Inverse of ``to_map`` (e.g. a ``sumMap(sketch)`` result read back from ClickHouse)."""
        keys = np.fromiter(buckets.keys(), dtype=np.int64, count=len(buckets))
        counts = np.fromiter(buckets.values(), dtype=np.uint64, count=len(buckets))
        order = np.argsort(keys, kind="stable")
        keep = counts[order] > 0
        return cls(gamma, keys[order][keep].astype(np.int32), counts[order][keep], int(nonpositive_count))

    @property
    def bucketed_count(self) -> int:
        return int(self.counts.sum(dtype=np.uint64))

    @property
    def count(self) -> int:
        """All values seen, bucketed or not."""
        return self.bucketed_count + self.nonpositive_count

    def merge(self, other: Sketch) -> Sketch:
        """Bucket-wise sum: the sketch of the union of both inputs."""
        if not math.isclose(self.gamma, other.gamma, rel_tol=1e-12):
            raise ValueError(f"cannot merge sketches with different gamma ({self.gamma} vs {other.gamma})")
        codes, counts = _reduce_codes(
            np.concatenate((self.keys, other.keys)).astype(np.int64),
            np.concatenate((self.counts, other.counts)),
        )
        return Sketch(self.gamma, codes.astype(np.int32), counts, self.nonpositive_count + other.nonpositive_count)

    def quantiles(self, qs: ArrayLike) -> NDArray[np.float64]:
        """Estimates for each q over the bucketed (positive) values; NaN when there are none."""
        q = _check_qs(qs)
        cum = np.cumsum(self.counts, dtype=np.uint64)
        n = cum[-1:] if cum.size else np.zeros(1, np.uint64)
        idx, empty = _lower_rank_indices(cum, np.zeros(1, np.uint64), n, q)
        if empty[0]:
            return np.full(q.size, np.nan)
        return bucket_values(self.keys[idx[0]], self.gamma)

    def quantile(self, q: float) -> float:
        return float(self.quantiles([q])[0])

    def to_map(self) -> dict[int, int]:
        """The ``Map(Int32, UInt64)`` value stored in ClickHouse."""
        return dict(zip(self.keys.tolist(), self.counts.tolist(), strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sketch):
            return NotImplemented
        return (
            self.gamma == other.gamma
            and self.nonpositive_count == other.nonpositive_count
            and np.array_equal(self.keys, other.keys)
            and np.array_equal(self.counts, other.counts)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class GroupedSketches:
    """Sketches of ``n_groups`` groups in one CSR layout: group g owns ``keys[offsets[g]:offsets[g+1]]``."""

    gamma: float
    offsets: NDArray[np.int64]
    keys: NDArray[np.int32]
    counts: NDArray[np.uint64]
    nonpositive_counts: NDArray[np.uint64]

    @classmethod
    def from_batch(
        cls,
        group_ids: ArrayLike,
        values: ArrayLike,
        n_groups: int | None = None,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
    ) -> GroupedSketches:
        """Sketch a whole batch at once: ``values[i]`` belongs to group ``group_ids[i]`` (0 .. n_groups-1)."""
        g = np.asarray(group_ids, dtype=np.int64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
        if g.shape != v.shape:
            raise ValueError(f"group_ids and values differ in length ({g.size} vs {v.size})")
        if g.size and int(g.min()) < 0:
            raise ValueError("group ids must be >= 0")
        size = int(g.max()) + 1 if g.size else 0
        n = size if n_groups is None else int(n_groups)
        if n < size:
            raise ValueError(f"n_groups={n} but a group id is {size - 1}")
        gamma = gamma_for(relative_accuracy)
        ok = _bucketable(v)
        nonpositive = np.bincount(g[~ok], minlength=n).astype(np.uint64)
        keys = np.ceil(np.log(v[ok]) / math.log(gamma)).astype(np.int64)
        groups, keys, counts = _count_codes(g[ok], keys, n)
        return cls._from_sorted(gamma, n, groups, keys, counts, nonpositive)

    @classmethod
    def _from_sorted(
        cls,
        gamma: float,
        n_groups: int,
        groups: NDArray[np.int64],
        keys: NDArray[np.int64],
        counts: NDArray[np.uint64],
        nonpositive: NDArray[np.uint64],
    ) -> GroupedSketches:
        offsets = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(np.bincount(groups, minlength=n_groups), out=offsets[1:])
        return cls(gamma, offsets, keys.astype(np.int32), counts, nonpositive)

    @property
    def n_groups(self) -> int:
        return self.offsets.size - 1

    @property
    def group_of_bucket(self) -> NDArray[np.int64]:
        return np.repeat(np.arange(self.n_groups, dtype=np.int64), np.diff(self.offsets))

    def sketch(self, group: int) -> Sketch:
        lo, hi = int(self.offsets[group]), int(self.offsets[group + 1])
        return Sketch(
            self.gamma, self.keys[lo:hi].copy(), self.counts[lo:hi].copy(), int(self.nonpositive_counts[group])
        )

    def merge(self, other: GroupedSketches) -> GroupedSketches:
        """Group-wise, bucket-wise sum; group g of the result merges group g of both."""
        if not math.isclose(self.gamma, other.gamma, rel_tol=1e-12):
            raise ValueError(f"cannot merge sketches with different gamma ({self.gamma} vs {other.gamma})")
        n = max(self.n_groups, other.n_groups)
        codes = np.concatenate(
            (
                (self.group_of_bucket << 32) | (self.keys.astype(np.int64) + _KEY_BIAS),
                (other.group_of_bucket << 32) | (other.keys.astype(np.int64) + _KEY_BIAS),
            )
        )
        codes, counts = _reduce_codes(codes, np.concatenate((self.counts, other.counts)))
        nonpositive = np.zeros(n, dtype=np.uint64)
        nonpositive[: self.n_groups] += self.nonpositive_counts
        nonpositive[: other.n_groups] += other.nonpositive_counts
        return GroupedSketches._from_sorted(
            self.gamma, n, codes >> 32, (codes & _KEY_MASK) - _KEY_BIAS, counts, nonpositive
        )

    def quantiles(self, qs: ArrayLike) -> NDArray[np.float64]:
        """Array (n_groups, len(qs)) of estimates; NaN rows for groups without bucketed values."""
        q = _check_qs(qs)
        cum = np.cumsum(self.counts, dtype=np.uint64)
        padded = np.concatenate((np.zeros(1, np.uint64), cum))
        base = padded[self.offsets[:-1]]
        idx, empty = _lower_rank_indices(cum, base, padded[self.offsets[1:]] - base, q)
        if cum.size == 0:
            return np.full((self.n_groups, q.size), np.nan)
        out = bucket_values(self.keys[idx], self.gamma)
        out[empty, :] = np.nan
        return out

    def to_maps(self) -> list[dict[int, int]]:
        """One ``Map(Int32, UInt64)`` value per group, for the ``sketch`` column."""
        keys, counts, bounds = self.keys.tolist(), self.counts.tolist(), self.offsets.tolist()
        return [dict(zip(keys[lo:hi], counts[lo:hi], strict=True)) for lo, hi in itertools.pairwise(bounds)]
