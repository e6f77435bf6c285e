"""`llmops report`: the numbers a dashboard would show, as text tables or JSON."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["build_report", "format_value", "render_report", "render_table", "REPORT_QUERIES", "MISSING"]

MISSING = "—"  # a value that does not exist (no price, never streamed, no p-value), never 0 or nan

# Which model a table groups by (docs/dashboards.md): reliability (calls, errors, latency) by the
# requested model, else the response model; spend by the billed model (`model`: response, else
# requested). Unpriced calls are the calls whose cost is NULL, failed ones included, in every table;
# their cost is shown as missing (NULL, printed "—"), never as $0.
# name -> SQL; each query is also what a Grafana panel would run (without the time filter).
REPORT_QUERIES: dict[str, str] = {
    "totals": """
        SELECT
            (SELECT count() FROM otel_traces) AS spans,
            (SELECT count() FROM llm_calls) AS llm_calls,
            (SELECT countIf(status = 'error') FROM llm_calls) AS llm_errors,
            (SELECT if(countIf(cost IS NOT NULL) = 0, NULL, toString(sum(cost))) FROM llm_calls) AS cost_usd,
            (SELECT countIf(cost IS NOT NULL) FROM llm_calls) AS priced_calls,
            (SELECT countIf(cost IS NULL) FROM llm_calls) AS unpriced_calls,
            (SELECT sumIf(llm_calls.input_tokens + llm_calls.output_tokens, llm_calls.cost IS NULL) FROM llm_calls)
                AS unpriced_tokens,
            (SELECT count() FROM ingest_errors) AS ingest_errors,
            (SELECT countIf(dead_lettered) FROM ingest_errors) AS dead_lettered
    """,
    "by_requested_model": """
        SELECT provider, if(request_model = '', response_model, request_model) AS requested_model, count() AS calls,
               countIf(status = 'error') AS errors, countIf(status = 'error') / count() AS error_rate
        FROM llm_calls GROUP BY provider, requested_model ORDER BY calls DESC, requested_model
    """,
    "by_model": """
        SELECT provider, model, count() AS calls, countIf(status = 'error') AS errors,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cache_read_tokens) AS cache_read_tokens, sum(reasoning_tokens) AS reasoning_tokens,
               if(countIf(cost IS NOT NULL) = 0, NULL, toString(sum(cost))) AS cost_usd,
               countIf(cost IS NULL) AS unpriced_calls,
               sumIf(llm_calls.input_tokens + llm_calls.output_tokens, llm_calls.cost IS NULL) AS unpriced_tokens,
               if(countIf(reported_cost IS NOT NULL) = 0, NULL, toString(sum(reported_cost))) AS reported_cost_usd
        FROM llm_calls GROUP BY provider, model ORDER BY calls DESC, model
    """,
    "by_team": """
        SELECT team, count() AS calls, if(countIf(cost IS NOT NULL) = 0, NULL, toString(sum(cost))) AS cost_usd,
               countIf(cost IS NULL) AS unpriced_calls,
               sumIf(llm_calls.input_tokens + llm_calls.output_tokens, llm_calls.cost IS NULL) AS unpriced_tokens
        FROM llm_calls GROUP BY team ORDER BY calls DESC, team
    """,
    "by_service": """
        SELECT service, environment, team, count() AS calls, sum(input_tokens) AS input_tokens,
               sum(output_tokens) AS output_tokens,
               if(countIf(cost IS NOT NULL) = 0, NULL, toString(sum(cost))) AS cost_usd,
               countIf(cost IS NULL) AS unpriced_calls,
               sumIf(llm_calls.input_tokens + llm_calls.output_tokens, llm_calls.cost IS NULL) AS unpriced_tokens
        FROM llm_calls GROUP BY service, environment, team ORDER BY calls DESC, service
    """,
    # Percentiles come from the per-window sketches merged in ClickHouse (1% relative accuracy);
    # a model that never streamed has no TTFT (NULL, printed "—"), not NaN.
    "latency_by_model": """
        SELECT request_model,
               sumIf(count, metric = 'duration_ms') AS calls,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.50), 1) AS p50_duration_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.95), 1) AS p95_duration_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.99), 1) AS p99_duration_ms,
               sumIf(count, metric = 'ttft_ms') AS streamed,
               if(streamed = 0, NULL,
                  round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.50), 1)) AS p50_ttft_ms,
               if(streamed = 0, NULL,
                  round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.95), 1)) AS p95_ttft_ms,
               if(streamed = 0, NULL,
                  round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.99), 1)) AS p99_ttft_ms
        FROM llm_latency_1m GROUP BY request_model ORDER BY calls DESC, request_model
    """,
    "drifted": """
        SELECT service, model, prompt_name, prompt_version, window_start, window_end, signal, statistic, value,
               p_value, threshold, reference, reference_end
        FROM llm_drift WHERE drifted ORDER BY window_start DESC, service, model, signal, statistic LIMIT 30
    """,
    "change_events": """
        SELECT ts, service, prompt_name, kind, old_value, new_value, model FROM change_events ORDER BY ts DESC LIMIT 20
    """,
    "ingest_errors": """
        SELECT stage, reason, count() AS n FROM ingest_errors GROUP BY stage, reason ORDER BY n DESC LIMIT 20
    """,
}


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def build_report(client: Client) -> dict[str, Any]:
    report: dict[str, Any] = {name: _rows(client, sql) for name, sql in REPORT_QUERIES.items()}
    report["totals"] = report["totals"][0] if report["totals"] else {}
    return report


def format_value(name: str, value: Any) -> str:
    """Text for one cell: "—" where nothing exists, rates as percentages, p-values and statistics to
    3 significant digits, other floats to 0.1, datetimes in full (reference windows are named exactly)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "\\N":
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if name.endswith("_rate"):
            return f"{value:.2%}"
        if name in ("p_value", "value", "threshold"):
            return f"{value:.3g}"
        return f"{value:,.1f}"
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # the tables are UTC; naive values are UTC too
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def render_table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}\n  (none)\n"
    headers = list(rows[0])
    cells = [[format_value(name, v) for name, v in row.items()] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines) + "\n"


def render_report(report: dict[str, Any]) -> str:
    totals = report.get("totals", {})
    parts = ["Totals\n" + "".join(f"  {k}: {format_value(k, v)}\n" for k, v in totals.items())]
    parts.append(render_table("Calls and errors by requested model", report["by_requested_model"]))
    parts.append(render_table("Spend by billed model (unpriced calls: cost —, counted apart)", report["by_model"]))
    parts.append(render_table("Spend by team", report["by_team"]))
    parts.append(render_table("LLM calls by service", report["by_service"]))
    parts.append(render_table("Latency by requested model (ms)", report["latency_by_model"]))
    parts.append(render_table("Drifted keys (latest windows)", report["drifted"]))
    parts.append(render_table("Change events", report["change_events"]))
    parts.append(render_table("Ingest errors", report["ingest_errors"]))
    return "\n".join(parts)
