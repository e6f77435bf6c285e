"""take_batches (processors/batching.py) over a stand-in for faust's stream: only `take_events` and the
events' `message.incref()` are used, as in the worker. The worker's end-to-end tests run it on real faust."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from processors.batching import take_batches


@dataclass
class _Message:
    offset: int
    refs: int = 0

    def incref(self) -> None:
        self.refs += 1


@dataclass
class _Event:
    message: _Message


class _Stream:
    """Yields scripted chunks: (seconds to wait first, number of events)."""

    def __init__(self, script: list[tuple[float, int]], fail: Exception | None = None, hold: bool = False) -> None:
        self.script = script
        self.fail = fail
        self.hold = hold  # after the script, wait forever instead of ending
        self.pulled = 0

    async def take_events(self, max_: int, within: float) -> AsyncIterator[list[_Event]]:
        for delay, count in self.script:
            await asyncio.sleep(delay)
            chunk = [_Event(_Message(self.pulled + i)) for i in range(count)]
            self.pulled += count
            yield chunk
        if self.fail is not None:
            raise self.fail
        if self.hold:
            await asyncio.Event().wait()


def _offsets(batch: list[_Event]) -> list[int]:
    return [event.message.offset for event in batch]


async def _first(stream: _Stream, batches: int, max_records: int, max_wait_s: float) -> list[list[_Event]]:
    taken = take_batches(stream, max_records, max_wait_s)
    out = [await asyncio.wait_for(taken.__anext__(), 5) for _ in range(batches)]
    await taken.aclose()
    return out


def test_batches_keep_order_never_exceed_the_maximum_and_hold_one_reference_each() -> None:
    stream = _Stream([(0, 3), (0, 7), (0, 4), (0.01, 1)], hold=True)
    # max_wait_s well above the script's 10 ms pause: a loaded machine must not close the last batch early.
    batches = asyncio.run(_first(stream, 4, max_records=4, max_wait_s=1.0))
    assert [_offsets(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]
    assert all(event.message.refs == 1 for batch in batches for event in batch)


def test_a_partial_batch_waits_from_its_oldest_event_not_from_the_request() -> None:
    """The last records of a burst arrive while the previous batch is processed; when the agent asks
    again after longer than max_wait_s, they are handed over at once (faust's take_events would wait
    max_wait_s more)."""
    max_wait_s = 1.0  # the bound below (half of it) leaves room for a loaded machine's scheduling delay

    async def scenario() -> tuple[list[list[int]], float]:
        loop = asyncio.get_running_loop()
        batches = take_batches(_Stream([(0, 8), (0, 3)], hold=True), 8, max_wait_s)
        first = await batches.__anext__()
        await asyncio.sleep(1.5 * max_wait_s)  # processing the first batch
        asked = loop.time()
        second = await batches.__anext__()
        waited = loop.time() - asked
        await batches.aclose()
        return [_offsets(first), _offsets(second)], waited

    offsets, waited = asyncio.run(scenario())
    assert offsets == [list(range(8)), [8, 9, 10]]
    assert waited < max_wait_s / 2


def test_a_partial_batch_is_handed_over_once_its_wait_is_over() -> None:
    (batch,) = asyncio.run(_first(_Stream([(0, 2)], hold=True), 1, max_records=100, max_wait_s=0.1))
    assert _offsets(batch) == [0, 1]


def test_the_reader_stops_pulling_while_a_full_batch_waits() -> None:
    async def scenario() -> tuple[int, int]:
        stream = _Stream([(0, 5)] * 20, hold=True)
        batches = take_batches(stream, 10, 0.1)
        await batches.__anext__()
        await asyncio.sleep(0.2)  # the agent is busy; the stream has 90 more events to give
        pulled_while_busy = stream.pulled
        rest = [await asyncio.wait_for(batches.__anext__(), 5) for _ in range(9)]
        await batches.aclose()
        return pulled_while_busy, sum(len(b) for b in rest)

    pulled_while_busy, rest = asyncio.run(scenario())
    assert pulled_while_busy <= 10 + 10 + 5  # the batch taken, one full batch waiting, one chunk
    assert rest == 90


def test_when_the_stream_stops_what_waits_is_left_unacknowledged() -> None:
    """As with faust's take_events: Kafka delivers it again (the sink's fences make that harmless)."""

    async def scenario() -> list[int]:
        stream = _Stream([(0, 3)])
        assert [batch async for batch in take_batches(stream, 10, 5.0)] == []
        return [stream.pulled]

    assert asyncio.run(scenario()) == [3]


def test_a_stream_error_reaches_the_agent() -> None:
    async def scenario() -> None:
        async for _ in take_batches(_Stream([(0, 3)], fail=RuntimeError("broker gone")), 10, 5.0):
            pass

    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(scenario())
