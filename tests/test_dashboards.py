"""The provisioning tree in dashboards/ is well formed, and tests/grafana_macros.py expands like the plugin.

Structure: every file parses; dashboards have unique uids and panel ids, grid positions that
fit 24 columns and do not overlap, datasource references to the provisioned uid only, and
every template variable they use is defined (and every panel uses all four). Alert rules and
notifications reference what exists. Macro expectations are the plugin's and the SDK's own
test cases (grafana/clickhouse-datasource pkg/macros, grafana-plugin-sdk-go data/sqlutil,
CHDatasource.applyConditionalAll), computed by hand for our time range.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinks.clickhouse.migrations import available_migrations
from tests.grafana_macros import (
    ALL,
    MacroError,
    TimeRange,
    Variable,
    apply_conditional_all,
    expand_backend_macros,
    interpolate_variables,
    render_alert_query,
    render_panel_query,
    template_variable_names,
)

ROOT = Path(__file__).resolve().parents[1]
DASH_DIR = ROOT / "dashboards"
JSON_FILES = sorted((DASH_DIR / "json").glob("*.json"))
YAML_FILES = sorted((DASH_DIR / "provisioning").rglob("*.yaml"))
VARIABLES = {"service", "environment", "team", "model"}


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in JSON_FILES]


def _datasource() -> dict[str, Any]:
    (ds,) = yaml.safe_load((DASH_DIR / "provisioning" / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    return ds


def _alerting() -> dict[str, Any]:
    merged: dict[str, Any] = {"groups": [], "contactPoints": [], "policies": []}
    for path in sorted((DASH_DIR / "provisioning" / "alerting").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        assert doc["apiVersion"] == 1
        for key in merged:
            merged[key].extend(doc.get(key, []))
    return merged


# ----------------------------------------------------------------------------- files


def test_every_file_parses_and_all_five_dashboards_exist() -> None:
    for path in YAML_FILES:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    titles = {d["title"] for d in _dashboards()}
    assert titles == {
        "LLMOps / Spend",
        "LLMOps / Latency",
        "LLMOps / Quality and drift",
        "LLMOps / Pipeline health",
        "LLMOps / Agents",
    }
    assert {p.parent.name for p in YAML_FILES} == {"alerting", "dashboards", "datasources"}


def test_uids_and_panel_ids_are_unique() -> None:
    dashboards = _dashboards()
    uids = [d["uid"] for d in dashboards]
    assert len(uids) == len(set(uids)) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)
    for dash in dashboards:
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), dash["uid"]
        assert "id" not in dash and "version" not in dash  # Grafana owns both


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def test_grid_positions_fit_and_do_not_overlap() -> None:
    for dash in _dashboards():
        grids = [p["gridPos"] for p in dash["panels"]]
        for g in grids:
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, (dash["uid"], g)
        for i, a in enumerate(grids):
            for b in grids[i + 1 :]:
                assert not _overlap(a, b), (dash["uid"], a, b)


def test_overlap_check_detects_overlap() -> None:
    assert _overlap({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 11, "y": 7, "w": 4, "h": 4})
    assert not _overlap({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 12, "y": 0, "w": 12, "h": 8})


def _datasource_refs(dash: dict[str, Any]) -> list[dict[str, Any]]:
    refs = []
    for panel in dash["panels"]:
        refs.append(panel["datasource"])
        refs.extend(t["datasource"] for t in panel.get("targets", []))
    refs.extend(v["datasource"] for v in dash["templating"]["list"])
    for annotation in dash["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        refs.extend([annotation["datasource"], annotation["target"]["datasource"]])
    return refs


def test_datasource_references_are_the_provisioned_one() -> None:
    ds = _datasource()
    assert ds["uid"] == "llmops-clickhouse" and ds["type"] == "grafana-clickhouse-datasource"
    for dash in _dashboards():
        for ref in _datasource_refs(dash):
            assert ref == {"type": ds["type"], "uid": ds["uid"]}, (dash["uid"], ref)
    for group in _alerting()["groups"]:
        for rule in group["rules"]:
            for node in rule["data"]:
                assert node["datasourceUid"] in (ds["uid"], "__expr__"), rule["uid"]


def _queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(p["title"], t["rawSql"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["query"]["rawSql"]) for v in dash["templating"]["list"]]
    out += [(a["name"], a["target"]["rawSql"]) for a in dash["annotations"]["list"] if "target" in a]
    return out


def test_template_variables_are_defined_multi_with_all_and_used_by_every_panel() -> None:
    for dash in _dashboards():
        defined = {v["name"]: v for v in dash["templating"]["list"]}
        assert set(defined) == VARIABLES
        for var in defined.values():
            assert var["multi"] and var["includeAll"] and var["current"]["value"] == ["$__all"]
        for title, sql in _queries(dash):
            used = template_variable_names(sql)
            assert used <= set(defined), (dash["uid"], title, used - set(defined))
            if not title.startswith("variable "):
                assert used == VARIABLES, (dash["uid"], title, VARIABLES - used)
                for name in VARIABLES:  # each through $__conditionalAll, so All costs nothing
                    assert f", ${name})" in sql, (dash["uid"], title, name)


def test_change_events_are_annotations_on_every_dashboard_with_time_series() -> None:
    for dash in _dashboards():
        assert any(p["type"] == "timeseries" for p in dash["panels"])
        (annotation,) = [a for a in dash["annotations"]["list"] if "target" in a]
        assert annotation["enable"] and "FROM change_events" in annotation["target"]["rawSql"]
        assert "filter" not in annotation  # shown on every panel


def test_latency_percentiles_come_from_merged_sketches() -> None:
    (latency,) = [d for d in _dashboards() if d["uid"] == "llmops-latency"]
    sketch_panels = [p for p in latency["panels"] if "llm_latency_1m" in p["targets"][0]["rawSql"]]
    assert len(sketch_panels) >= 5
    for panel in sketch_panels:
        sql = panel["targets"][0]["rawSql"]
        assert "sketch_quantile(sumMap(sketch)" in sql and not re.search(r"\bavg\(p\d\d\)", sql)


def _link_queries(dash: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], link)
        for panel in dash["panels"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]


def test_replacing_tables_are_read_with_final() -> None:
    """agent_runs and agent_anomalies keep a run's rows of fewer spans until a merge (migration 010):
    every panel, link and rule query reads them with FINAL."""
    sqls = [sql for dash in _dashboards() for _, sql in _queries(dash)]
    sqls += [link["internal"]["query"]["rawSql"] for dash in _dashboards() for _, link in _link_queries(dash)]
    sqls += [rule["data"][0]["model"]["rawSql"] for group in _alerting()["groups"] for rule in group["rules"]]
    reads = 0
    for sql in sqls:
        for match in re.finditer(r"\b(agent_runs|agent_anomalies)\b(\s+AS\s+\w+)?(\s+FINAL\b)?", sql):
            assert match.group(3), sql[max(0, match.start() - 60) : match.end() + 60]
            reads += 1
    assert reads >= 12


def test_trace_id_columns_link_to_the_trace_view() -> None:
    """Every agents table shows trace_id with one internal link (the plugin's own kind of trace link): a
    raw-SQL trace query (format 3) on the provisioned data source, with no macro or dashboard variable
    (Grafana interpolates only the clicked value into a link's query)."""
    (agents,) = [d for d in _dashboards() if d["uid"] == "llmops-agents"]
    tables = {p["title"] for p in agents["panels"] if p["type"] == "table"}
    links = _link_queries(agents)
    assert {title for title, _ in links} == tables and len(links) == len(tables)
    ds = _datasource()
    for panel in agents["panels"]:
        for override in panel["fieldConfig"]["overrides"]:
            if any(prop["id"] == "links" for prop in override["properties"]):
                assert override["matcher"] == {"id": "byName", "options": "trace_id"}
                assert re.search(r"\btrace_id\s+FROM\b", panel["targets"][0]["rawSql"]), panel["title"]
    for _, link in links:
        internal = link["internal"]
        query = internal["query"]
        assert internal["datasourceUid"] == ds["uid"] and query["datasource"] == {"type": ds["type"], "uid": ds["uid"]}
        assert (query["editorType"], query["queryType"], query["format"]) == ("sql", "traces", 3)
        sql = query["rawSql"]
        assert sql.count("${__value.raw}") == 1 and not re.search(r"\$__(?!value\.raw)", sql)
        assert template_variable_names(sql.replace("${__value.raw}", "")) == set()
        assert "FROM otel_traces WHERE TraceId = run_trace" in sql


# ----------------------------------------------------------------------------- alerting


def test_alert_rules_are_complete_and_backend_safe() -> None:
    alerting = _alerting()
    provider = yaml.safe_load((DASH_DIR / "provisioning" / "dashboards" / "llmops.yaml").read_text())["providers"][0]
    panel_ids = {d["uid"]: {p["id"] for p in d["panels"]} for d in _dashboards()}
    uids = []
    for group in alerting["groups"]:
        assert group["folder"] == provider["folder"]
        for rule in group["rules"]:
            uids.append(rule["uid"])
            assert set(rule["labels"]) >= {"team", "service", "model", "severity"}
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert rule["annotations"]["summary"] and rule["annotations"]["runbook_url"]
            match = re.match(
                r"/d/([a-z-]+)/[a-z-]+\?viewPanel=(\d+)&from=now-\d+[mh]&to=now", rule["annotations"]["runbook_url"]
            )
            assert match and int(match.group(2)) in panel_ids[match.group(1)], rule["annotations"]["runbook_url"]
            for template in rule["labels"].values():  # file provisioning expands $x in labels: escape as $$
                assert not re.search(r"(?<!\$)\$(?!\$)", template), template
            sql = rule["data"][0]["model"]["rawSql"]
            assert "$__timeFilter(" in sql and "relativeTimeRange" in rule["data"][0]
            render_alert_query(sql, TimeRange.relative(datetime(2026, 1, 1, tzinfo=UTC), 600))
    assert len(uids) == len(set(uids)) == 12


def test_contact_points_and_policy_route_by_severity_and_team() -> None:
    alerting = _alerting()
    receivers = {cp["name"] for cp in alerting["contactPoints"]}
    (webhook,) = [r for cp in alerting["contactPoints"] for r in cp["receivers"]]
    assert webhook["type"] == "webhook" and webhook["settings"]["url"] == "$LLMOPS_ALERT_WEBHOOK_URL"
    (policy,) = alerting["policies"]
    matched: set[str] = set()

    def walk(route: dict[str, Any]) -> None:
        assert route["receiver"] in receivers
        for name, op, _ in route.get("object_matchers", []):
            assert op == "="
            matched.add(name)
        for child in route.get("routes", []):
            walk(child)

    walk(policy)
    assert "team" in policy["group_by"] and matched == {"severity", "team"}
    severities = {r["labels"]["severity"] for g in alerting["groups"] for r in g["rules"]}
    routed = {m[2] for r in policy["routes"] for m in r["object_matchers"] if m[0] == "severity"}
    assert severities <= routed


def test_drift_migration_has_the_contract_tables() -> None:
    (migration,) = [m for m in available_migrations() if m.name == "004_drift_tables.sql"]
    statements = migration.statements()
    assert len(statements) == 2
    for line in migration.sql.splitlines():
        if line.strip().startswith("--"):
            assert ";" not in line
    drift, events = statements
    for column in (
        "window_start DateTime64(3, 'UTC')",
        "p_value Nullable(Float64)",
        "drifted Bool",
        "n_ref UInt32",
        "reference String",
    ):
        assert column in drift
    for column in ("ts DateTime64(9, 'UTC')", "kind LowCardinality(String)", "old_value String", "new_value String"):
        assert column in events
    for statement in statements:
        assert statement.startswith("CREATE TABLE IF NOT EXISTS ")
        assert (
            "_ingest_source LowCardinality(String) DEFAULT ''" in statement
            and "_ingest_offset UInt64 DEFAULT 0" in statement
        )
        assert statement.endswith("SETTINGS non_replicated_deduplication_window = 1000")


# ----------------------------------------------------------------------------- macros

FROM = datetime(2021, 3, 6, 3, 6, 40, 123000, tzinfo=UTC)  # 1615000000.123
TO = datetime(2021, 3, 7, 0, 0, 0, 999000, tzinfo=UTC)  # 1615075200.999
RANGE = TimeRange(FROM, TO, timedelta(seconds=30))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(ts)", "ts >= toDateTime(1615000000) AND ts <= toDateTime(1615075200)"),
        (
            "$__timeFilter_ms(ts)",
            "ts >= fromUnixTimestamp64Milli(1615000000123) AND ts <= fromUnixTimestamp64Milli(1615075200999)",
        ),
        ("$__dateFilter(d)", "d >= toDate('2021-03-06') AND d <= toDate('2021-03-07')"),
        (
            "$__dateTimeFilter(d, ts)",
            (
                "(d >= toDate('2021-03-06') AND d <= toDate('2021-03-07')) AND "
                "(ts >= toDateTime(1615000000) AND ts <= toDateTime(1615075200))"
            ),
        ),
        ("$__fromTime < $__toTime", "toDateTime(1615000000) < toDateTime(1615075200)"),
        (
            "$__fromTime_ms,$__toTime_ms",
            "fromUnixTimestamp64Milli(1615000000123),fromUnixTimestamp64Milli(1615075200999)",
        ),
        ("$__timeInterval(ts)", "toStartOfInterval(toDateTime(ts), INTERVAL 30 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 30000 millisecond)"),
        ("count() / $__interval_s", "count() / 30"),
        (
            "$__timeFilter(toDateTime(ts, 'UTC') )",
            "toDateTime(ts, 'UTC') >= toDateTime(1615000000) AND toDateTime(ts, 'UTC') <= toDateTime(1615075200)",
        ),
        ("($__fromTime)", "(toDateTime(1615000000))"),
        ("$__fromTime (x)", "toDateTime(1615000000) (x)"),  # args only when '(' follows directly
    ],
)
def test_backend_macros_expand_like_the_plugin(sql: str, expected: str) -> None:
    assert expand_backend_macros(sql, RANGE) == expected


def test_interval_is_at_least_one_unit_and_truncated() -> None:
    short = TimeRange(FROM, TO, timedelta(milliseconds=400))
    assert expand_backend_macros("$__interval_s $__timeInterval_ms(t)", short) == (
        "1 toStartOfInterval(toDateTime64(t, 3), INTERVAL 400 millisecond)"
    )
    odd = TimeRange(FROM, TO, timedelta(seconds=90, milliseconds=900))
    assert expand_backend_macros("$__interval_s", odd) == "90"


@pytest.mark.parametrize(
    "sql",
    [
        "$__timeFilter(ts",
        "$__timeFilter(f(ts)",
        "$__timeFilter(a, b)",
        "$__timeFilter",
        "$__timeFilterEpoch(ts)",
        "$__unknown",
    ],
)
def test_bad_macros_are_errors(sql: str) -> None:
    with pytest.raises(MacroError):
        expand_backend_macros(sql, RANGE)


def _vars(**selected: tuple[str, ...]) -> dict[str, Variable]:
    return {name: Variable(name, values, options=("a", "b", "c")) for name, values in selected.items()}


def test_conditional_all_follows_the_plugin() -> None:
    sql = "WHERE $__conditionalAll(x IN (${v}), $v) AND $__conditionalAll(y IN (f(1, 2), ${w}), ${w}) AND z"
    assert apply_conditional_all(sql, _vars(v=(ALL,), w=("b",))) == "WHERE 1=1 AND y IN (f(1, 2), ${w}) AND z"
    assert apply_conditional_all(sql, _vars(v=(), w=(ALL,))) == "WHERE 1=1 AND 1=1 AND z"
    assert (
        apply_conditional_all(sql, _vars(v=("a", "b"), w=("c",))) == "WHERE x IN (${v}) AND y IN (f(1, 2), ${w}) AND z"
    )
    # An unknown variable keeps the condition; a malformed occurrence stops the scan where it is.
    assert apply_conditional_all("$__conditionalAll(x = 1, $nope)", {}) == "x = 1"
    assert (
        apply_conditional_all("$__conditionalAll(x) AND $__conditionalAll(y, $v)", _vars(v=(ALL,)))
        == "$__conditionalAll(x) AND 1=1"
    )


def test_variables_interpolate_like_grafana_with_the_plugin_format() -> None:
    variables = {
        "m": Variable("m", ("a", "b")),
        "s": Variable("s", ("x",), multi=False),
        "all": Variable("all", (ALL,), options=("p", "q")),
    }
    assert interpolate_variables("IN ($m) ${m} [[m]]", variables) == "IN ('a','b') 'a','b' 'a','b'"
    assert interpolate_variables("= $s", variables) == "= x"
    assert interpolate_variables("IN (${all})", variables) == "IN ('p','q')"
    assert interpolate_variables("${m:csv} ${m:raw} ${m:sqlstring}", variables) == "a,b a,b 'a','b'"
    assert (
        interpolate_variables("$unknown $__interval_s $__timeFilter(ts)", variables)
        == "$unknown $__interval_s $__timeFilter(ts)"
    )
    assert template_variable_names("$a ${b} [[c]] $__timeFilter(x) ${d:csv}") == {"a", "b", "c", "d"}


def test_panel_and_alert_rendering_order() -> None:
    sql = "SELECT 1 FROM t WHERE $__timeFilter(ts) AND $__conditionalAll(s IN (${service}), $service)"
    assert render_panel_query(sql, {"service": Variable("service", ("a",))}, RANGE).endswith("AND s IN ('a')")
    assert render_panel_query(sql, {"service": Variable("service", (ALL,))}, RANGE).endswith("AND 1=1")
    with pytest.raises(MacroError, match="conditionalAll"):
        render_alert_query(sql, RANGE)
    with pytest.raises(MacroError, match="variables"):
        render_alert_query("SELECT $service", RANGE)
    assert render_alert_query("SELECT 1 WHERE $__timeFilter(ts)", TimeRange.relative(TO, 600)).startswith(
        "SELECT 1 WHERE ts >= toDateTime(1615074600)"
    )
