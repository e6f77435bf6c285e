"""Which of the project's functions one gen_ai span passes through in the worker, in the order first called.

Not a speed benchmark: issue 15 asked for the path of one span before and after the core layer. One
Kafka record holding one OTLP request with one gen_ai span goes through the worker's BatchHandler into
a fresh chDB store (after one such record that warms the caches), under `sys.setprofile` (and
`threading.setprofile` for the worker threads); every function of the tree's own packages that runs
is listed once (comprehensions and lambdas left out), with its module, then how many calls there
were and how many went into another module. Run it on any tree, before or after processors/core/
existed, each in its own process:

    PYTHONPATH=<tree> .venv/bin/python benchmarks/span_path.py [--json]

The editable install of this checkout is taken off the import path, so the tree on PYTHONPATH is what runs.
"""

from __future__ import annotations

import sys

# The checkout's editable install would resolve `processors` to this tree whatever PYTHONPATH says.
sys.meta_path = [finder for finder in sys.meta_path if getattr(finder, "__name__", "") != "_EditableFinder"]
sys.path = [p for p in sys.path if p not in ("", sys.path[0])]  # not the script's directory (this tree)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from types import FrameType  # noqa: E402
from typing import Any  # noqa: E402

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

PACKAGES = ("processors", "sinks", "collector", "llmops", "schemas")
START = 1_764_000_000_000_000_000


def _request() -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "span-path"
    span = rs.scope_spans.add().spans.add(
        trace_id=os.urandom(16),
        span_id=os.urandom(8),
        name="chat",
        start_time_unix_nano=START,
        end_time_unix_nano=START + 1,
    )
    for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
                       ("gen_ai.request.model", "gpt-4o"), ("gen_ai.response.model", "gpt-4o-2024-08-06")):  # fmt: skip
        span.attributes.add(key=key).value.string_value = value
    span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 1200
    span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 300
    span.attributes.add(key="gen_ai.response.time_to_first_chunk").value.double_value = 0.25
    return request.SerializeToString()


def trace_one_span() -> tuple[list[tuple[str, str]], int, int]:
    """The functions in first-call order, the number of calls, and how often a call went to another module."""
    core = "processors.core" if importlib.util.find_spec("processors.core") is not None else "processors"
    pipeline = importlib.import_module(f"{core}.pipeline")
    from llmops.config import Settings
    from processors.batch_handler import BatchHandler
    from processors.stages import build_call_stages
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.migrations import apply_migrations
    from sinks.clickhouse.writer import ClickHouseSink

    tree = Path(importlib.import_module("processors").__file__ or "").resolve().parents[1]
    client = connect(f"chdb://{tempfile.mkdtemp(prefix='span-path-')}", "llmops", create_database=True)
    apply_migrations(client, "llmops")
    handler = BatchHandler(ClickHouseSink(client, "llmops"), build_call_stages(Settings()), _dead_letter)
    # A first record warms the caches (pricing resolution, insert contexts): the second shows the steady path.
    asyncio.run(handler.handle([pipeline.SourceRecord("otlp_spans", 0, 0, _request(), "span-path/0")]))
    record = pipeline.SourceRecord("otlp_spans", 0, 1, _request(), "span-path/0")
    seen: dict[tuple[str, str], None] = {}
    calls: list[str] = []  # the module of every call, in order

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        path = Path(code.co_filename)
        if code.co_name.startswith("<") or not path.is_relative_to(tree):
            return
        module = ".".join(path.relative_to(tree).with_suffix("").parts)
        if module.startswith(PACKAGES):
            seen.setdefault((module, code.co_qualname), None)
            calls.append(module)

    sys.setprofile(profile)
    threading.setprofile(profile)  # the batch's CPU work and the inserts run in worker threads
    try:
        asyncio.run(handler.handle([record]))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    stored = client.query("SELECT count() FROM llm_calls WHERE service = 'span-path'").result_rows[0][0]
    if stored != 2:
        raise SystemExit(f"the two spans were not stored as two LLM calls ({stored})")
    switches = sum(1 for a, b in itertools.pairwise(calls) if a != b)
    return list(seen), len(calls), switches


async def _dead_letter(item: Any) -> None:
    raise SystemExit(f"the record was dead-lettered: {item}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print [module, function] pairs as JSON")
    args = parser.parse_args()
    path, calls, switches = trace_one_span()
    if args.json:
        print(json.dumps({"functions": path, "calls": calls, "module_switches": switches}))
        return
    for module, function in path:
        print(f"{module}: {function}")
    print(
        f"{len(path)} functions in {len({m for m, _ in path})} modules; {calls} calls, {switches} into another module"
    )


if __name__ == "__main__":
    main()
