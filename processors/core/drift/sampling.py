"""Bottom-k sampling by call hash, a filter that lets workers send only what can be sampled, and a
bounded registry of live keys.

Why: a drift window may see millions of calls for one key; statistics need a uniform sample of
fixed size (default 1,000), and shipping every call to the worker that owns the key costs more
than everything else the worker does with it.

- `call_priority`: a 64-bit hash of a call's (trace id, span id), the same in every process.
  For distinct calls the priorities behave as independent uniform draws, so the ``k`` calls of
  smallest priority are a uniform random sample of size ``k`` without replacement.
- `BottomK`: those ``k`` calls. The sample of a union is the bottom-k of the parts'
  bottom-k samples, so it does not matter which worker saw which call or in what order, and a
  call delivered twice has one priority and is kept once.
- `PrioritySieve`: what a decoding worker keeps per key and window: the ``k`` smallest
  priorities it has already sent. A call whose priority is not below all of them can never be
  in that window's sample (the worker already sent ``k`` smaller ones), so it need not be sent.
  After the first ``k`` calls a window sends about ``k ln(n / k)`` of its next ``n``. Losing a
  sieve (restart, eviction) only sends more; it never loses a call the sample needs.
- `KeyRegistry`: at most ``max_keys`` live values, least recently used evicted first, evictions
  counted (never silent).

Pure data structures: no I/O, no clocks.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

__all__ = ["BottomK", "KeyRegistry", "PrioritySieve", "call_priority"]

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def call_priority(trace_id: str, span_id: str) -> int:
    """Uniform in [0, 2**64): blake2b of the ids, so every worker and every restart agrees."""
    digest = hashlib.blake2b(f"{trace_id}/{span_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class BottomK(Generic[T]):
    """The items of the ``capacity`` smallest distinct priorities offered so far."""

    __slots__ = ("_capacity", "_heap", "_items")

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._heap: list[int] = []  # negated priorities: heap[0] is minus the largest one kept
        self._items: dict[int, T] = {}

    @property
    def items(self) -> Sequence[T]:
        """The current sample (a read-only view; order carries no meaning)."""
        return tuple(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def admits(self, priority: int) -> bool:
        """Whether `offer` would keep an item of this priority (a kept priority is not kept twice)."""
        if priority in self._items:
            return False
        return len(self._heap) < self._capacity or priority < -self._heap[0]

    def offer(self, priority: int, item: T) -> bool:
        """Keep the item if its priority is among the ``capacity`` smallest; True when kept."""
        if not self.admits(priority):
            return False
        if len(self._heap) < self._capacity:
            heapq.heappush(self._heap, -priority)
        else:
            del self._items[-heapq.heapreplace(self._heap, -priority)]
        self._items[priority] = item
        return True


class PrioritySieve(Generic[K]):
    """Per key (e.g. drift key and window): the ``capacity`` smallest priorities already let through.

    ``passes`` is exact: every call of a key's global bottom-k passes at the worker that sees it.
    At most ``max_keys`` keys are remembered; a forgotten key lets everything through again.
    """

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int, max_keys: int) -> None:
        self._capacity = capacity
        self._keys: KeyRegistry[K, BottomK[None]] = KeyRegistry(max_keys)

    def passes(self, key: K, priority: int) -> bool:
        kept, _ = self._keys.get_or_create(key, lambda: BottomK(self._capacity))
        return kept.offer(priority, None)


class KeyRegistry(Generic[K, V]):
    """Live values per key, at most ``max_keys``; the least recently used key is evicted first."""

    __slots__ = ("_evicted", "_max_keys", "_values")

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._max_keys = max_keys
        self._values: OrderedDict[K, V] = OrderedDict()
        self._evicted = 0

    @property
    def evicted(self) -> int:
        """Keys evicted so far to respect ``max_keys``."""
        return self._evicted

    def __len__(self) -> int:
        return len(self._values)

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
