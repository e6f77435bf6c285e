"""`llmops report`: the numbers a dashboard would show, as text tables or JSON."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

__all__ = ["build_report", "render_report", "render_table", "REPORT_QUERIES"]

# name -> SQL; each query is also what a Grafana panel would run (without the time filter).
REPORT_QUERIES: dict[str, str] = {
    "totals": """
        SELECT
            (SELECT count() FROM otel_traces) AS spans,
            (SELECT count() FROM llm_calls) AS llm_calls,
            (SELECT countIf(status = 'error') FROM llm_calls) AS llm_errors,
            (SELECT toString(sum(cost)) FROM llm_calls) AS cost_usd,
            (SELECT countIf(cost IS NULL) FROM llm_calls) AS unpriced_calls,
            (SELECT count() FROM ingest_errors) AS ingest_errors,
            (SELECT countIf(dead_lettered) FROM ingest_errors) AS dead_lettered
    """,
    "by_model": """
        SELECT provider, model, count() AS calls, countIf(status = 'error') AS errors,
               sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
               sum(cache_read_tokens) AS cache_read_tokens, sum(reasoning_tokens) AS reasoning_tokens,
               toString(sum(cost)) AS cost_usd, countIf(cost IS NULL AND status = 'ok') AS unpriced_calls,
               toString(sum(reported_cost)) AS reported_cost_usd
        FROM llm_calls GROUP BY provider, model ORDER BY calls DESC, model
    """,
    "by_team": """
        SELECT team, count() AS calls, toString(sum(cost)) AS cost_usd, countIf(cost IS NULL AND status = 'ok') AS unpriced_calls
        FROM llm_calls GROUP BY team ORDER BY calls DESC, team
    """,
    "by_service": """
        SELECT service, environment, team, count() AS calls, sum(input_tokens) AS input_tokens,
               sum(output_tokens) AS output_tokens, toString(sum(cost)) AS cost_usd
        FROM llm_calls GROUP BY service, environment, team ORDER BY calls DESC, service
    """,
    # Percentiles come from the per-window sketches merged in ClickHouse (1% relative accuracy).
    "latency_by_model": """
        SELECT model,
               sumIf(count, metric = 'duration_ms') AS calls,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.50), 1) AS p50_duration_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.95), 1) AS p95_duration_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'duration_ms'), 0.99), 1) AS p99_duration_ms,
               sumIf(count, metric = 'ttft_ms') AS streamed,
               round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.50), 1) AS p50_ttft_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.95), 1) AS p95_ttft_ms,
               round(sketch_quantile(sumMapIf(sketch, metric = 'ttft_ms'), 0.99), 1) AS p99_ttft_ms
        FROM llm_latency_1m GROUP BY model ORDER BY calls DESC, model
    """,
    "drifted": """
        SELECT service, model, prompt_name, prompt_version, window_start, signal, statistic, round(value, 4) AS value,
               p_value, reference
        FROM llm_drift WHERE drifted ORDER BY window_start DESC, service, model, signal, statistic LIMIT 30
    """,
    "change_events": """
        SELECT ts, service, kind, old_value, new_value, model, prompt_name FROM change_events ORDER BY ts DESC LIMIT 20
    """,
    "ingest_errors": """
        SELECT stage, reason, count() AS n FROM ingest_errors GROUP BY stage, reason ORDER BY n DESC LIMIT 20
    """,
}


def _rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def build_report(client: Client) -> dict[str, Any]:
    report = {name: _rows(client, sql) for name, sql in REPORT_QUERIES.items()}
    report["totals"] = report["totals"][0] if report["totals"] else {}
    return report


def render_table(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{title}\n  (none)\n"
    headers = list(rows[0])
    cells = [[("" if v is None else str(v)) for v in row.values()] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


def render_report(report: dict[str, Any]) -> str:
    totals = report.get("totals", {})
    parts = ["Totals\n" + "".join(f"  {k}: {v}\n" for k, v in totals.items())]
    parts.append(render_table("LLM calls by model", report["by_model"]))
    parts.append(render_table("Spend by team", report["by_team"]))
    parts.append(render_table("LLM calls by service", report["by_service"]))
    parts.append(render_table("Latency by model (ms)", report["latency_by_model"]))
    parts.append(render_table("Drifted keys (latest windows)", report["drifted"]))
    parts.append(render_table("Change events", report["change_events"]))
    parts.append(render_table("Ingest errors", report["ingest_errors"]))
    return "\n".join(parts)
