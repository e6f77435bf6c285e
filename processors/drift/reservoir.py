"""Bounded uniform reservoir of calls per drift key and window, and a bounded registry of live keys.

Why: a drift window may see millions of calls for one key; statistics need a uniform sample of
fixed size (default 1,000), and memory must stay bounded however many keys appear.

- `Reservoir`: Li's Algorithm L (ACM TOMS 1994) with a seeded numpy Generator. After the
  reservoir is full it draws random numbers only when an item is taken (O(k (1 + log(n/k)))
  draws for n items), so the per-call cost of a skipped call is one integer comparison, and
  ``offer_lazy`` builds the row (e.g. hashes the answer) only for calls that are taken.
  ``merge`` combines reservoirs of disjoint streams into a uniform sample of their union
  (hypergeometric split), e.g. 96 window reservoirs into a 24-hour reference.
- `KeyRegistry`: at most ``max_keys`` live values, least recently used evicted first, evictions
  counted (never silent).

Pure data structures: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

import numpy as np

__all__ = ["Reservoir", "KeyRegistry"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Reservoir(Generic[T]):
    """Uniform random sample of at most ``capacity`` items of a stream (Algorithm L)."""

    __slots__ = ("_capacity", "_items", "_seen", "_rng", "_w", "_next")

    def __init__(self, capacity: int = 1000, rng: np.random.Generator | int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._items: list[T] = []
        self._seen = 0
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._w = 1.0
        self._next = capacity  # 0-based stream index of the next item to take once full

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def seen(self) -> int:
        """Items offered so far (the population the sample stands for)."""
        return self._seen

    @property
    def items(self) -> Sequence[T]:
        """The current sample (a read-only view; order carries no meaning)."""
        return tuple(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(tuple(self._items))

    def _uniform(self) -> float:
        # (0, 1]: log() stays finite
        return 1.0 - float(self._rng.random())

    def _schedule(self) -> None:
        """Draw the stream index of the next item to take, given the current threshold ``w``."""
        if self._w >= 1.0:
            self._next = self._seen
            return
        if self._w <= 0.0:
            self._next = math.inf  # type: ignore[assignment]
            return
        skip = math.floor(math.log(self._uniform()) / math.log1p(-self._w))
        self._next = self._seen + skip

    def wants_next(self) -> bool:
        """Whether the next offered item will be taken (lets callers skip building it)."""
        return len(self._items) < self._capacity or self._seen == self._next

    def offer(self, item: T) -> bool:
        """Offer one stream item; True when it entered the sample."""
        return self.offer_lazy(lambda: item)

    def offer_lazy(self, make: Callable[[], T]) -> bool:
        """Offer one stream item built by ``make`` only if it is taken; True when taken."""
        if len(self._items) < self._capacity:
            self._items.append(make())
            self._seen += 1
            if len(self._items) == self._capacity:
                self._w = math.exp(math.log(self._uniform()) / self._capacity)
                self._schedule()
            return True
        if self._seen != self._next:
            self._seen += 1
            return False
        self._items[int(self._rng.integers(self._capacity))] = make()
        self._seen += 1
        self._w *= math.exp(math.log(self._uniform()) / self._capacity)
        self._schedule()
        return True

    @classmethod
    def merge(
        cls, reservoirs: Sequence[Reservoir[T]], capacity: int | None = None, rng: np.random.Generator | int | None = None
    ) -> Reservoir[T]:
        """A uniform sample of the union of the reservoirs' (disjoint) streams.

        How many items come from each stream follows the multivariate hypergeometric law of
        drawing ``min(capacity, total seen)`` items from the union; each reservoir then gives a
        uniform subset of its own sample of that size. Since each input is a uniform sample of
        its stream, the result is a uniform sample of the union. Requires every input to hold
        ``min(seen, capacity_in)`` items with ``capacity_in >= capacity`` for the streams that
        need it (always true for reservoirs of one capacity).
        """
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        cap = capacity if capacity is not None else max((r.capacity for r in reservoirs), default=1)
        out: Reservoir[T] = cls(cap, gen)
        seen = np.array([r.seen for r in reservoirs], dtype=np.int64)
        total = int(seen.sum())
        if total == 0:
            return out
        size = min(cap, total)
        counts = gen.multivariate_hypergeometric(seen, size) if len(reservoirs) > 1 else np.array([size])
        items: list[T] = []
        for reservoir, count in zip(reservoirs, counts.tolist()):
            if count > len(reservoir):
                raise ValueError("an input reservoir holds fewer items than the merge needs (capacity too small)")
            chosen = gen.choice(len(reservoir), size=count, replace=False) if count else []
            pool = reservoir._items
            items.extend(pool[int(i)] for i in chosen)
        out._items = items
        out._seen = total
        if len(items) == cap:
            # Threshold of Algorithm L after `total` items: the cap-th smallest of `total` uniforms,
            # Beta(cap, total - cap + 1), independent of which items were kept.
            out._w = float(gen.beta(cap, total - cap + 1)) if total > cap else math.exp(math.log(out._uniform()) / cap)
            out._schedule()
        return out


class KeyRegistry(Generic[K, V]):
    """Live values per key, at most ``max_keys``; the least recently used key is evicted first."""

    __slots__ = ("_max_keys", "_values", "_evicted")

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._values: OrderedDict[K, V] = OrderedDict()
        self._evicted = 0

    @property
    def max_keys(self) -> int:
        return self._max_keys

    @property
    def evicted(self) -> int:
        """Keys evicted so far to respect ``max_keys``."""
        return self._evicted

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: K) -> V | None:
        """The value of a live key (marks it recently used), else None."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def get_or_create(self, key: K, factory: Callable[[], V]) -> tuple[V, tuple[K, V] | None]:
        """(value of key, evicted (key, value) or None); creates with ``factory`` when absent."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key], None
        evicted: tuple[K, V] | None = None
        if len(self._values) >= self._max_keys:
            evicted = self._values.popitem(last=False)
            self._evicted += 1
        value = factory()
        self._values[key] = value
        return value, evicted

    def pop(self, key: K) -> V | None:
        """Remove a key (e.g. its window closed); not counted as an eviction."""
        return self._values.pop(key, None)

    def keys(self) -> list[K]:
        """Live keys, least recently used first."""
        return list(self._values)
