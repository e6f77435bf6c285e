"""Pricing against a real store: coverage, reprice (idempotent, aggregates follow), update from a URL, check.

The store (chDB) is filled by the real pipeline: loadgen spans through the OpenTelemetry SDK into
a local OTLP/HTTP sink, then the worker's decode/normalise/price/aggregate code and ClickHouse
sink. Loadgen's `acme-llama-ft-v3` (provider acme.vllm, self-hosted) has no price anywhere, so
its calls are stored with cost NULL until a pricing file prices them.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.broker import free_port
from llmops.config import Settings
from llmops.loadgen import LoadgenOptions, run_loadgen
from llmops.pricing_cli import pricing_check, pricing_coverage, pricing_reprice, pricing_update
from llmops.reprice import reprice
from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, parse_records
from processors.core.pricer import Pricer, PricerSources
from processors.stages import build_call_stages
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink
from tests.grafana_macros import ALL, TimeRange, Variable, render_panel_query
from tests.otlp_sink import otlp_http_sink
from tests.pricing_snapshots import snapshot_json

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SELF_HOSTED = "acme-llama-ft-v3"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Any]]:
    data_dir = tmp_path_factory.mktemp("pricing-store")
    settings = Settings(data_dir=data_dir, sql={"port": free_port()})
    client = connect(settings.clickhouse_dsn, "llmops", create_database=True)
    try:
        apply_migrations(client, "llmops")
        sink = ClickHouseSink(client, "llmops")
        stages = build_call_stages(settings)
        offset = 0
        for batch, seed in enumerate((21, 22, 23)):  # three batches: several partials per window and key
            bodies: list[bytes] = []
            with otlp_http_sink(bodies.append) as endpoint:
                summary = run_loadgen(
                    LoadgenOptions(
                        endpoint=endpoint,
                        count=150,
                        seed=seed,
                        start_ns=_ns(START + timedelta(seconds=40 * batch)),
                        time_step_ns=800_000_000,
                    )
                )
            assert summary.complete and bodies
            records = [
                SourceRecord("otlp_spans", batch % 2, offset + i, body, f"test/{batch % 2}")
                for i, body in enumerate(bodies)
            ]
            offset += len(bodies)
            parsed, poison = parse_records(records)
            decoded = decode_parsed(parsed, stages)
            assert not poison
            for n, rows in enumerate(build_tables(decoded, {}, stages, now_ms=_ns(START) // 10**6)):
                sink.write(rows, token=f"{rows.table}:{batch}:{n}")
        yield settings, client
    finally:
        client.close()


def _scalar(client: Any, sql: str) -> Any:
    return client.query(sql).result_rows[0][0]


def _totals_agree(client: Any) -> None:
    """Every total the dashboards read from llm_usage_1m equals the sum over llm_calls."""
    calls = client.query(
        "SELECT model, service, sum(ifNull(cost, 0)), countIf(cost IS NOT NULL), countIf(cost IS NULL) FROM llm_calls "
        "GROUP BY model, service ORDER BY model, service"
    ).result_rows
    usage = client.query(
        "SELECT model, service, sum(cost), sum(priced_calls), sum(unpriced_calls) FROM llm_usage_1m "
        "GROUP BY model, service ORDER BY model, service"
    ).result_rows
    totals = client.query(
        "SELECT model, service, sum(cost), sum(priced_calls), sum(unpriced_calls) FROM llm_usage_totals "
        "GROUP BY model, service ORDER BY model, service"
    ).result_rows
    assert calls == usage == totals
    # And the spend dashboard's own panel queries, as Grafana expands them.
    spend = json.loads((ROOT / "dashboards" / "json" / "spend.json").read_text())
    variables = {name: Variable(name, (ALL,)) for name in ("service", "environment", "team", "model")}
    window = TimeRange(START - timedelta(hours=1), START + timedelta(hours=2), timedelta(minutes=1))
    want = _scalar(client, "SELECT sum(ifNull(cost, 0)) FROM llm_calls")
    for title in ("Cost by model", "Cost by service", "Top spenders"):
        sql = next(t["rawSql"] for p in spend["panels"] if p["title"] == title for t in p["targets"])
        result = client.query(render_panel_query(sql, variables, window))
        column = result.column_names.index("cost_usd")
        # Unpriced calls are their own rows with an empty cost, never $0 (issue 16).
        got = sum(Decimal(str(row[column])) for row in result.result_rows if row[column] is not None)
        assert abs(got - want) < Decimal("1e-9"), title  # panels may return Float64 for plotting


def _snapshot(client: Any) -> list[tuple]:
    return (
        client.query("SELECT * FROM llm_usage_1m ORDER BY ALL").result_rows
        + client.query(
            "SELECT trace_id, span_id, cost, pricing_entry, pricing_source FROM llm_calls ORDER BY trace_id, span_id"
        ).result_rows
    )


def _price_file(path: Path, price: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    {
                        "id": "acme/llama-ft-v3",
                        "provider": "acme.vllm",
                        "match": [SELF_HOSTED],
                        "effective_from": "2026-01-01",
                        "input": price,
                        "output": price,
                        "source": "our GPU cost: 4x L40S reserved, measured 2,400 tokens/s",
                        "checked": "2026-11-30",
                    }
                ]
            }
        )
    )
    return path


def test_coverage_reports_shares_by_source_and_the_unpriced_models(store: tuple[Settings, Any]) -> None:
    settings, client = store
    report = json.loads(pricing_coverage(settings, "2026-11-01", as_json=True))
    calls = _scalar(client, "SELECT count() FROM llm_calls WHERE status = 'ok'")
    priced = _scalar(client, "SELECT countIf(cost IS NOT NULL) FROM llm_calls WHERE status = 'ok'")
    assert report["summary"]["calls"] == calls > 0
    assert report["summary"]["priced_calls_pct"] == round(100 * priced / calls, 2) < 100
    assert {r["source"] for r in report["by_provider_and_source"]} >= {"base", "unpriced"}
    assert report["unpriced_models"][0]["model"] == SELF_HOSTED
    text = pricing_coverage(settings, "2026-11-01", as_json=False)
    assert "Unpriced models, most tokens first" in text and SELF_HOSTED in text
    with pytest.raises(SystemExit, match="not an ISO 8601 time"):
        pricing_coverage(settings, "last tuesday", as_json=False)


def test_reprice_prices_null_calls_and_the_aggregates_follow_idempotently(
    store: tuple[Settings, Any], tmp_path: Path
) -> None:
    _settings, client = store
    nulls = _scalar(client, f"SELECT count() FROM llm_calls WHERE model = '{SELF_HOSTED}' AND cost IS NULL")
    assert nulls > 0
    _totals_agree(client)
    pricer = Pricer.load(PricerSources(pricing_files=(_price_file(tmp_path / "p.yaml", "0.20"),)))
    first = reprice(client, pricer, START - timedelta(hours=1))
    assert first.repriced == nulls and first.windows_fixed > 0
    assert _scalar(client, f"SELECT countIf(cost IS NULL) FROM llm_calls WHERE model = '{SELF_HOSTED}'") == 0
    tokens = _scalar(client, f"SELECT sum(input_tokens + output_tokens) FROM llm_calls WHERE model = '{SELF_HOSTED}'")
    assert (
        _scalar(client, f"SELECT sum(cost) FROM llm_calls WHERE model = '{SELF_HOSTED}'")
        == Decimal(tokens) * Decimal("0.20") / 10**6
    )
    assert _scalar(client, f"SELECT any(pricing_source) FROM llm_calls WHERE model = '{SELF_HOSTED}'") == "user"
    _totals_agree(client)
    before = _snapshot(client)
    second = reprice(client, pricer, START - timedelta(hours=1))
    assert (second.repriced, second.windows_fixed) == (0, 0)
    assert _snapshot(client) == before

    # A correction: every call of the model since T gets the new price, the windows follow, twice is once.
    corrected = Pricer.load(PricerSources(pricing_files=(_price_file(tmp_path / "p.yaml", "0.25"),)))
    third = reprice(client, corrected, START - timedelta(hours=1), model=SELF_HOSTED)
    assert third.repriced == nulls and third.cost_after == Decimal(tokens) * Decimal("0.25") / 10**6
    _totals_agree(client)
    before = _snapshot(client)
    assert reprice(client, corrected, START - timedelta(hours=1), model=SELF_HOSTED).repriced == 0
    assert _snapshot(client) == before
    # The fences the sink resumes from did not move.
    fences = client.query(
        "SELECT _ingest_source, max(_ingest_offset) FROM llm_usage_1m GROUP BY ALL ORDER BY ALL"
    ).result_rows
    calls_fences = client.query(
        "SELECT _ingest_source, max(_ingest_offset) FROM llm_calls GROUP BY ALL ORDER BY ALL"
    ).result_rows
    assert fences == calls_fences


def test_reprice_refuses_while_a_stack_serves_the_data_dir(tmp_path: Path) -> None:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Ping)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = Settings(data_dir=tmp_path, sql={"port": port})
        with pytest.raises(SystemExit, match="stop `llmops up` first"):
            pricing_reprice(settings, "2026-11-01", None)
    finally:
        server.shutdown()
        server.server_close()


class _Ping(http.server.BaseHTTPRequestHandler):
    """Answers /ping like a ClickHouse endpoint, and serves `body` at any other path."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802
        payload = b"Ok.\n" if self.path == "/ping" else self.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def test_update_from_a_url_on_loopback_then_from_a_bad_file(tmp_path: Path) -> None:
    _Ping.body = snapshot_json({("openai", "gpt-4o"): ("9", "90")})
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Ping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = Settings(data_dir=tmp_path, sql={"port": free_port()})
    try:
        out = pricing_update(settings, f"http://127.0.0.1:{port}/data.json")
    finally:
        server.shutdown()
        server.server_close()
    target = tmp_path / "pricing-snapshot.json"
    assert target.read_bytes() == _Ping.body and "1 models" in out and "base genai-prices" in out
    pricer = Pricer.load(PricerSources(snapshot=target))
    assert pricer.version.startswith("sha256:")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(SystemExit, match="expected a non-empty JSON array"):
        pricing_update(settings, str(bad))
    assert target.read_bytes() == _Ping.body  # the good snapshot stays


def test_check_of_an_unpriced_model_says_how_to_price_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmops",
            "pricing",
            "check",
            "my-selfhosted-llama",
            "--provider",
            "ollama",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "unpriced" in out.stdout and "How to price it" in out.stdout and 'match: ["my-selfhosted-llama"]' in out.stdout
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("entries:\n  - id: x\n    input: 2.5\n")
    broken = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmops",
            "pricing",
            "check",
            "gpt-4o",
            "--pricing-file",
            str(bad),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert broken.returncode != 0 and len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert f"{bad}: entries.0." in broken.stderr and "Traceback" not in broken.stderr
    settings = Settings(data_dir=tmp_path)

    class Args:
        model, provider, at, region, tier = "gpt-4o", "openai", "2026-11-15", "", "priority"

    text = pricing_check(settings, Args())  # type: ignore[arg-type]
    assert "-> base: base:openai/gpt-4o" in text and "How to price it" not in text
