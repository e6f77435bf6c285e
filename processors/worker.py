"""`llmops worker`: run the faust app in the foreground, with the SQL endpoint when the store is embedded."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from faust.worker import Worker

from llmops.config import Settings
from processors.app import create_app

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings, bootstrap: str) -> None:
    # A batch keeps ~300k short-lived acyclic objects alive; with the default gen-0 threshold
    # (700) the collector rescans them thousands of times per batch: ~40% of the worker's CPU.
    gc.set_threshold(100_000, 50, 100)
    if settings.embedded_store:
        settings = _run_from_data_dir(settings)
    app = create_app(settings, bootstrap)
    if settings.embedded_store and settings.sql.enabled:
        from llmops.sql_endpoint import SqlEndpoint

        endpoint = SqlEndpoint.from_settings(settings)

        @app.task
        async def _start_sql_endpoint() -> None:
            await endpoint.start()

        @app.on_before_shutdown.connect
        async def _stop_sql_endpoint(*_: Any, **__: Any) -> None:
            await endpoint.stop()

    # What start-up built lives as long as the process: keep it out of every later collection.
    gc.freeze()
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()


def _run_from_data_dir(settings: Settings) -> Settings:
    """Make the settings' paths absolute, then run from the data dir.

    chDB keeps the inline Protobuf schema of the otel_traces inserts in
    `<working dir>/__cache__` (a server uses its own format_schemas dir), and no
    connection option moves it: without this it would land wherever `llmops` was
    started.
    """
    processor = settings.processor
    files = {
        name: path.resolve()
        for name in ("pricing_file", "budgets_file", "pricing_snapshot_file")
        if (path := getattr(processor, name)) is not None
    }
    data_dir = settings.data_dir.resolve()
    settings = settings.model_copy(update={"data_dir": data_dir, "processor": processor.model_copy(update=files)})
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(data_dir)
    return settings
