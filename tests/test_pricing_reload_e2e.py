"""A running worker picks up a changed pricing file without a restart, and logs the entries that changed.

Real parts: the embedded broker, `llmops worker` and `llmops receive` as processes, loadgen through
the OpenTelemetry SDK. The pricing file prices loadgen's self-hosted model; it is edited while the
worker runs; calls sent after the edit carry the new price, calls before it the old one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import yaml

from llmops.loadgen import LoadgenOptions, run_loadgen
from llmops.store import endpoint_alive
from tests.conftest import wait_until

MODEL = "acme-llama-ft-v3"
DAY_NS = 86_400 * 10**9


def _write_prices(path: Path, price: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    {
                        "id": "acme/llama-ft-v3",
                        "provider": "acme.vllm",
                        "match": [MODEL],
                        "effective_from": "2020-01-01",
                        "input": price,
                        "output": price,
                        "source": "our GPU cost per token",
                        "checked": "2026-11-30",
                    }
                ]
            }
        )
    )


def test_a_changed_pricing_file_reprices_new_calls_in_the_running_worker(make_stack, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    _write_prices(prices, "0.20")
    stack = make_stack(
        partitions=1,
        LLMOPS_PROCESSOR__PRICING_FILE=str(prices),
        LLMOPS_PROCESSOR__PRICING_RELOAD_S="0.2",
        LLMOPS_DRIFT__ENABLED="false",
    )
    log = tmp_path / "worker.log"
    with log.open("w") as err:
        stack.worker = subprocess.Popen(
            [sys.executable, "-m", "llmops", "worker"],
            env=stack.env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    wait_until(
        lambda: endpoint_alive("127.0.0.1", stack.sql_port) or stack.worker.poll() is not None,
        90,
        "worker SQL endpoint",
    )
    assert stack.worker.poll() is None, log.read_text()[-2000:]
    stack.start_receiver()

    yesterday = (time.time_ns() // DAY_NS - 1) * DAY_NS
    first = run_loadgen(LoadgenOptions(endpoint=stack.http_url, count=300, seed=5, start_ns=yesterday))
    assert first.complete
    wait_until(lambda: stack.count("SELECT count() FROM llm_calls") == first.llm_spans_acknowledged, 90, "first calls")

    _write_prices(prices, "0.30")
    second = run_loadgen(LoadgenOptions(endpoint=stack.http_url, count=300, seed=6))
    assert second.complete
    total = first.llm_spans_acknowledged + second.llm_spans_acknowledged
    wait_until(lambda: stack.count("SELECT count() FROM llm_calls") == total, 90, "second calls")

    client = stack.reader()
    try:
        rows = client.query(
            # The cut is the start of the day the test began, not today(): a run across midnight moves today().
            f"SELECT toUnixTimestamp64Nano(ts) < {yesterday + DAY_NS} AS before_edit, "
            "sum(input_tokens + output_tokens), sum(cost), "
            "countIf(cost IS NULL), count() "
            f"FROM llm_calls WHERE model = '{MODEL}' GROUP BY before_edit ORDER BY before_edit DESC"
        ).result_rows
    finally:
        client.close()
    (old, old_tokens, old_cost, old_null, old_n), (new, new_tokens, new_cost, new_null, new_n) = rows
    assert old and not new and old_n > 0 and new_n > 0 and old_null == new_null == 0
    assert old_cost == Decimal(old_tokens) * Decimal("0.20") / 10**6
    assert new_cost == Decimal(new_tokens) * Decimal("0.30") / 10**6
    wait_until(lambda: "pricing reloaded" in log.read_text(), 10, "reload log line")
    line = next(x for x in log.read_text().splitlines() if "pricing reloaded" in x)
    assert "changed acme/llama-ft-v3" in line, line
