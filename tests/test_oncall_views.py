"""What on-call reads is what was sent: error rates per requested model and unpriced calls, in every view.

Spans are made by the OpenTelemetry SDK (failed calls carry no response model, as real SDKs emit
them), exported over OTLP/HTTP and fed through the pipeline's own decode, normalise, price,
aggregate and ClickHouse sink code into chDB. Then every dashboard panel, alert rule, report line
and live-summary line that shows an error rate or unpriced calls is read back and compared with
what was sent, to the exact fraction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmops.config import Settings
from llmops.live import SUMMARY_QUERY, summary_line
from llmops.report import MISSING, build_report, render_report
from processors.core.drift.stream import DRIFT_COLUMNS
from processors.core.pipeline import SourceRecord, build_tables, decode_parsed, parse_records
from processors.stages import build_call_stages
from sinks.clickhouse.client import connect
from sinks.clickhouse.migrations import apply_migrations
from sinks.clickhouse.writer import ClickHouseSink
from tests.alert_eval import evaluate_once
from tests.grafana_macros import ALL, TimeRange, Variable, render_panel_query
from tests.otlp_sink import collecting_otlp_sink
from tests.test_dashboard_queries import PANEL_QUERIES, RULES

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

# service, team, provider, requested model, answered model, successes, failures, streamed
MIX = [
    ("chat-svc", "alpha", "openai", "gpt-4o", "gpt-4o-2024-08-06", 97, 3, True),
    ("chat-svc", "alpha", "anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", 45, 5, True),
    ("chat-svc", "alpha", "mycorp", "mycorp-summarizer-v2", "mycorp-summarizer-v2", 18, 2, False),  # not in the catalog
    ("batch-svc", "beta", "openai", "gpt-4o", "gpt-4o-2024-08-06", 59, 1, False),
]
INPUT_TOKENS, OUTPUT_TOKENS = 120, 30  # per successful call; failed calls report none


def _sent_by_requested_model(service: str | None = None) -> dict[str, tuple[int, int]]:
    """(calls, failures) per requested model, from MIX (what was sent), optionally of one service."""
    out: dict[str, tuple[int, int]] = {}
    for svc, _, _, requested, _, ok, failed, _ in MIX:
        if service is None or svc == service:
            calls, errors = out.get(requested, (0, 0))
            out[requested] = (calls + ok + failed, errors + failed)
    return out


def _spans(endpoint: str) -> None:
    """Every call as an LLM span through the SDK's exporter, calls 1 s apart from T0 per service."""
    providers = {}
    for service, team, *_ in MIX:
        if service not in providers:
            provider = TracerProvider(resource=Resource.create({"service.name": service, "team": team}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
            providers[service] = provider
    step = dict.fromkeys(providers, 0)
    for service, _, system, requested, answered, ok, failed, streamed in MIX:
        tracer = providers[service].get_tracer("oncall-views")
        for i in range(ok + failed):
            start = int((T0 + timedelta(seconds=step[service])).timestamp() * 1e9)
            step[service] += 1
            error = i < failed
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": system,
                "gen_ai.request.model": requested,
            }
            if error:
                attrs["error.type"] = "RateLimitError"
            else:
                attrs.update(
                    {
                        "gen_ai.response.model": answered,
                        "gen_ai.usage.input_tokens": INPUT_TOKENS,
                        "gen_ai.usage.output_tokens": OUTPUT_TOKENS,
                    }
                )
                if streamed:
                    attrs["gen_ai.response.time_to_first_chunk"] = 0.25
            span = tracer.start_span(f"chat {requested}", kind=SpanKind.CLIENT, attributes=attrs, start_time=start)
            if error:
                span.set_status(Status(StatusCode.ERROR, "rate limited"))
            span.end(end_time=start + 800_000_000)
    for provider in providers.values():
        provider.force_flush()
        provider.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    client = connect(f"chdb://{tmp_path_factory.mktemp('oncall-chdb')}", "llmops", create_database=True)
    try:
        apply_migrations(client, "llmops")
        with collecting_otlp_sink() as (url, bodies):
            _spans(url)
        stages = build_call_stages(Settings())
        records = [SourceRecord("otlp_spans", 0, i, body, "test/0") for i, body in enumerate(bodies)]
        parsed, poison = parse_records(records)
        decoded = decode_parsed(parsed, stages)
        assert not poison
        sink = ClickHouseSink(client, "llmops")
        for n, rows in enumerate(build_tables(decoded, {}, stages, now_ms=int(T0.timestamp() * 1000))):
            sink.write(rows, token=f"{rows.table}:{n}")
        yield client
    finally:
        client.close()


def _variables() -> dict[str, Variable]:
    return {name: Variable(name, (ALL,)) for name in ("service", "environment", "team", "model")}


RANGE = TimeRange(T0 - timedelta(minutes=5), T0 + timedelta(minutes=30), timedelta(hours=1))  # one time bucket


def _panel(client: Any, uid: str, title: str) -> list[dict[str, Any]]:
    sql = next(s for u, t, s in PANEL_QUERIES if (u, t) == (uid, title))
    return list(client.query(render_panel_query(sql, _variables(), RANGE)).named_results())


def _rule(uid: str) -> dict[str, Any]:
    return next(r for r in RULES if r["uid"] == uid)


def test_stored_calls_are_what_was_sent(store: Any) -> None:
    sent = sum(ok + failed for *_, ok, failed, _ in MIX)
    assert store.query(
        "SELECT count(), countIf(status = 'error'), countIf(response_model = '') FROM llm_calls"
    ).result_rows[0] == (sent, sum(m[6] for m in MIX), sum(m[6] for m in MIX))


def test_by_billed_model_failures_and_successes_land_on_different_rows(store: Any) -> None:
    """The bug on-call saw ("gpt-4o 4 of 4 failed"): by billed model, every failure sits on the requested
    name and every success on the answered one. This is why reliability views group by request_model."""
    rows = dict(
        store.query(
            "SELECT model, sum(errors) / sum(calls) FROM llm_usage_1m WHERE model IN ('gpt-4o', 'gpt-4o-2024-08-06') "
            "GROUP BY model"
        ).result_rows
    )
    assert rows == {"gpt-4o": 1.0, "gpt-4o-2024-08-06": 0.0}


def test_error_rate_panel_is_the_sent_fraction_per_requested_model(store: Any) -> None:
    rows = _panel(store, "llmops-latency", "Error rate by requested model")
    shown = {r["request_model"]: r["error_rate"] for r in rows}
    expected = {model: errors / calls for model, (calls, errors) in _sent_by_requested_model().items()}
    assert shown == expected  # exact: the same float division of the same integers
    assert shown["gpt-4o"] == 4 / 160
    calls = {
        r["request_model"]: r["calls_per_s"] * 3600
        for r in _panel(store, "llmops-latency", "Call rate by requested model")
    }
    assert calls == {model: float(c) for model, (c, _) in _sent_by_requested_model().items()}


def test_error_rate_alert_values_are_the_sent_fractions(store: Any) -> None:
    evaluation = evaluate_once(store, _rule("llmops-error-rate"), T0 + timedelta(minutes=10))
    shown = {(dict(k)["service"], dict(k)["model"]): v for k, v in evaluation.values.items()}
    expected = {}
    for service in ("chat-svc", "batch-svc"):
        for model, (calls, errors) in _sent_by_requested_model(service).items():
            if calls >= 50:  # the rule's minimum volume
                expected[(service, model)] = errors / calls
    assert shown == expected
    firing = {key for key, holds in evaluation.holds.items() if holds}
    assert {(dict(k)["service"], dict(k)["model"]) for k in firing} == {("chat-svc", "claude-sonnet-4")}  # 10 % > 5 %


def test_report_and_live_summary_show_the_sent_fractions(store: Any) -> None:
    report = build_report(store)
    expected = _sent_by_requested_model()
    by_requested = {r["requested_model"]: r for r in report["by_requested_model"]}
    assert {m: (r["calls"], r["errors"], r["error_rate"]) for m, r in by_requested.items()} == {
        m: (c, e, e / c) for m, (c, e) in expected.items()
    }
    text = render_report(report)
    for model, (calls, errors) in expected.items():
        line = next(line for line in text.splitlines() if f" {model} " in line and f"{errors / calls:.2%}" in line)
        assert f" {calls} " in line and f" {errors} " in line
    live = {m: (c, e) for m, c, e, _, _ in store.query(SUMMARY_QUERY).result_rows}
    assert live == expected
    assert f"errors     4 ({4 / 160:>6.1%})" in summary_line("gpt-4o", 160, 4, 0, 0)


# ----------------------------------------------------------------------------- unpriced calls, one rule everywhere


def _unpriced_sent() -> tuple[int, int]:
    """(calls, tokens) of the unpriced model: every call counts, failed ones included (docs/dashboards.md)."""
    ((_, _, _, _, _, ok, failed, _),) = [m for m in MIX if m[3] == "mycorp-summarizer-v2"]
    return ok + failed, ok * (INPUT_TOKENS + OUTPUT_TOKENS)


def test_every_view_counts_unpriced_calls_the_same_way(store: Any) -> None:
    calls, tokens = _unpriced_sent()
    report = build_report(store)
    views: dict[str, tuple[int, int | None]] = {
        "report totals": (report["totals"]["unpriced_calls"], report["totals"]["unpriced_tokens"]),
        "report by model": (
            sum(r["unpriced_calls"] for r in report["by_model"]),
            sum(r["unpriced_tokens"] for r in report["by_model"]),
        ),
        "report by team": (
            sum(r["unpriced_calls"] for r in report["by_team"]),
            sum(r["unpriced_tokens"] for r in report["by_team"]),
        ),
        "report by service": (
            sum(r["unpriced_calls"] for r in report["by_service"]),
            sum(r["unpriced_tokens"] for r in report["by_service"]),
        ),
    }
    unpriced_models = _panel(store, "llmops-spend", "Unpriced models")
    views["panel Unpriced models"] = (
        sum(r["unpriced_calls"] for r in unpriced_models),
        sum(r["input_tokens"] + r["output_tokens"] for r in unpriced_models),
    )
    top = _panel(store, "llmops-spend", "Top spenders")
    views["panel Top spenders"] = (sum(r["unpriced_calls"] for r in top), sum(r["unpriced_tokens"] for r in top))
    views["panel Unpriced calls"] = (
        sum(r["unpriced_calls"] for r in _panel(store, "llmops-spend", "Unpriced calls")),
        None,
    )
    for dimension in ("model", "team", "environment", "service"):
        rows = _panel(store, "llmops-spend", f"Cost by {dimension}")
        views[f"panel Cost by {dimension}"] = (sum(r["unpriced_calls"] for r in rows), None)
    evaluation = evaluate_once(store, _rule("llmops-unpriced-models"), T0 + timedelta(minutes=10))
    views["alert Unpriced model calls"] = (int(sum(evaluation.values.values())), None)
    for view, (shown_calls, shown_tokens) in views.items():
        assert shown_calls == calls, view
        assert shown_tokens in (None, tokens), view


def test_unpriced_is_never_drawn_or_printed_as_zero(store: Any) -> None:
    cost_rows = {r["model"]: r for r in _panel(store, "llmops-spend", "Cost by model")}
    assert (
        cost_rows["mycorp-summarizer-v2"]["cost_usd"] is None
        and cost_rows["mycorp-summarizer-v2"]["unpriced_calls"] == 20
    )
    priced = cost_rows["gpt-4o-2024-08-06"]
    report = build_report(store)
    by_model = {r["model"]: r for r in report["by_model"]}
    assert (
        Decimal(priced["cost_usd"]) == Decimal(by_model["gpt-4o-2024-08-06"]["cost_usd"]) > 0
        and priced["unpriced_calls"] == 0
    )
    assert by_model["mycorp-summarizer-v2"]["cost_usd"] is None
    team_cost = {r["team"]: r for r in _panel(store, "llmops-spend", "Cost by team")}
    assert (
        team_cost["alpha"]["unpriced_calls"] == 20 and team_cost["alpha"]["cost_usd"] > 0
    )  # partly priced: both shown
    text = render_report(report)
    section = text.split("Spend by billed model")[1].split("\n\n")[0]
    line = next(line for line in section.splitlines() if "mycorp-summarizer-v2" in line)
    assert line.split()[-4:] == [
        MISSING,
        "20",
        str(_unpriced_sent()[1]),
        MISSING,
    ]  # cost, unpriced calls and tokens, reported


def test_report_prints_missing_values_and_sensible_precision(store: Any) -> None:
    store.insert(
        "llm_drift",
        [
            [
                T0,
                T0 + timedelta(minutes=15),
                "chat-svc",
                "gpt-4o-2024-08-06",
                "answer",
                "v4",
                "answer_length",
                "ks",
                0.123456789012345,
                1.234567890123e-9,
                0.005,
                True,
                500,
                480,
                "previous version v3: window 2026-05-04T08:45:00Z..2026-05-04T09:00:00Z",
                T0,
            ]
        ],
        column_names=DRIFT_COLUMNS,
    )
    text = render_report(build_report(store))
    assert "nan" not in text.lower() and "None" not in text
    section = text.split("Latency by requested model")[1].split("\n\n")[0]
    latency = next(line for line in section.splitlines() if line.strip().startswith("mycorp-summarizer-v2"))
    assert latency.split()[-4:] == ["0", MISSING, MISSING, MISSING]  # never streamed: no TTFT percentiles
    drift = next(line for line in text.splitlines() if "answer_length" in line)
    assert "1.23e-09" in drift and "0.123" in drift and "0.123456" not in drift
    assert "previous version v3: window 2026-05-04T08:45:00Z..2026-05-04T09:00:00Z" in drift
    assert "2026-05-04T09:00:00Z" in drift


def test_docs_say_which_model_each_spend_and_latency_panel_groups_by() -> None:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "dashboards.md").read_text()
    rows = {
        cells[0]: cells[1]
        for line in docs.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
        if len(cells) == 3
    }
    for name in ("spend", "latency"):
        for panel in json.loads((root / "dashboards" / "json" / f"{name}.json").read_text())["panels"]:
            assert panel["title"] in rows, panel["title"]
            sql = panel["targets"][0]["rawSql"]
            if "GROUP BY time, request_model" in sql or "GROUP BY metric, provider, request_model" in sql:
                assert "requested model" in rows[panel["title"]], panel["title"]
            if (
                "GROUP BY time, model" in sql
                or "GROUP BY service, team, model" in sql
                or "GROUP BY provider, model" in sql
            ):
                assert "billed model" in rows[panel["title"]], panel["title"]
