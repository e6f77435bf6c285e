"""An aiohttp app served on loopback from its own event loop thread, for tests whose stand-in servers
(model APIs) are called by synchronous SDK code in the test's thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

__all__ = ["serve_app"]


@contextmanager
def serve_app(app: web.Application) -> Iterator[int]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields the port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
