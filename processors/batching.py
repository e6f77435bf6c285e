"""Batches of stream events whose wait is counted from their oldest event.

faust's `take_events(n, within)` starts its timer when the agent asks for the
next batch. A record that arrived while the previous batch was being processed
therefore waits a full `within` more whenever the batch does not fill: at the
end of every burst and all the time under light traffic. `take_batches` reads
short chunks from `take_events` in a background task and hands a batch over as
soon as it is full or its oldest event has waited `max_wait_s`.

Each event is handed over holding one extra reference (`message.incref()`):
`take_events` acknowledges its chunk when the reader moves on, so the offset
can be committed only after the batch's owner acknowledges the event again,
once its rows are stored. When the stream stops, events not yet handed over
stay unacknowledged and are delivered again, as with `take_events`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any

__all__ = ["take_batches"]


async def take_batches(stream: Any, max_records: int, max_wait_s: float) -> AsyncGenerator[list[Any], None]:
    """Lists of at most `max_records` events, in stream order; each event holds one extra reference."""
    loop = asyncio.get_running_loop()
    waiting: deque[tuple[float, Any]] = deque()  # (arrival time, event)
    arrived = asyncio.Event()  # set when events arrive or the stream ends
    room = asyncio.Event()  # set while fewer than `max_records` events wait
    room.set()
    tick_s = min(0.05, max_wait_s / 4)  # how often `take_events` hands over a partial chunk

    async def read() -> None:
        try:
            async for events in stream.take_events(max_records, within=tick_s):
                now = loop.time()
                for event in events:
                    event.message.incref()
                    waiting.append((now, event))
                arrived.set()
                if len(waiting) >= max_records:  # a full batch waits: stop reading (Kafka backpressure)
                    room.clear()
                    await room.wait()
        finally:
            arrived.set()

    reader = asyncio.ensure_future(read())
    try:
        while True:
            while not waiting and not reader.done():
                arrived.clear()
                await arrived.wait()
            deadline = waiting[0][0] + max_wait_s if waiting else 0.0
            while len(waiting) < max_records and not reader.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), remaining)
                except TimeoutError:
                    break
            if reader.done():
                # The stream stopped (shutdown, rebalance) or failed. As with take_events, what still
                # waits is not handed over: it is never acknowledged, so Kafka delivers it again.
                await reader  # re-raises what stopped it
                return
            batch = [waiting.popleft()[1] for _ in range(min(max_records, len(waiting)))]
            if len(waiting) < max_records:
                room.set()
            yield batch
    finally:
        reader.cancel()
