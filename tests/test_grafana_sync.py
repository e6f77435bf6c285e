"""`llmops grafana sync` against a local stand-in of Grafana's HTTP API (a contract test, not a live Grafana).

The stand-in (aiohttp on 127.0.0.1, in a thread) keeps state like Grafana does, answers 404
for what it does not hold, checks the shape of every request body on the endpoints the sync
calls (required fields, references between them) and answers 400 when a shape is wrong, 401
for an unknown token and 403 for a token without rights.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from llmops.grafana_sync import DEFAULT_ROOT, GrafanaSyncError, add_cli, load_tree, run_command, sync

ROOT = Path(__file__).resolve().parents[1] / "dashboards"
ADMIN, VIEWER = "admin-token", "viewer-token"
ENV = {
    "CLICKHOUSE_HOST": "clickhouse",
    "CLICKHOUSE_PORT": "9000",
    "CLICKHOUSE_PROTOCOL": "native",
    "CLICKHOUSE_GRAFANA_USER": "grafana",
    "CLICKHOUSE_DATABASE": "llmops",
    "CLICKHOUSE_GRAFANA_PASSWORD": "s3cret",
    "LLMOPS_ALERT_WEBHOOK_URL": "https://hooks.example.test/llmops",
}


class Invalid(Exception):
    pass


def _require(body: Any, *keys: str) -> None:
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object")
    missing = [k for k in keys if k not in body]
    if missing:
        raise Invalid(f"missing fields: {missing}")


@dataclass
class FakeGrafana:
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    intervals: dict[tuple[str, str], int] = field(default_factory=dict)
    contact_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy: dict[str, Any] = field(
        default_factory=lambda: {"receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"]}
    )
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    # -- validation of request bodies (the fields Grafana requires, and references) --------------
    def check_datasource(self, body: Any) -> None:
        _require(body, "name", "type", "uid", "access", "jsonData")
        if body["type"] != "grafana-clickhouse-datasource" or "$" in json.dumps(body):
            raise Invalid("datasource type or unexpanded variable")

    def check_dashboard(self, body: Any) -> None:
        _require(body, "dashboard", "folderUid", "overwrite")
        _require(body["dashboard"], "uid", "title", "panels")
        if body["dashboard"].get("id") is not None or body["folderUid"] not in self.folders:
            raise Invalid("dashboard id must be null and its folder must exist")

    def check_rule(self, body: Any) -> None:
        _require(
            body,
            "uid",
            "title",
            "condition",
            "data",
            "folderUID",
            "ruleGroup",
            "noDataState",
            "execErrState",
            "for",
            "orgID",
        )
        if body["folderUID"] not in self.folders:
            raise Invalid(f"folder {body['folderUID']} does not exist")
        refs = set()
        for node in body["data"]:
            _require(node, "refId", "datasourceUid", "model")
            if node["datasourceUid"] != "__expr__":
                _require(node, "relativeTimeRange")
                if node["datasourceUid"] not in self.datasources:
                    raise Invalid(f"datasource {node['datasourceUid']} does not exist")
            refs.add(node["refId"])
        if body["condition"] not in refs or body["noDataState"] not in ("OK", "NoData", "Alerting", "KeepLast"):
            raise Invalid("condition or noDataState")
        if any("$$" in v for v in body.get("labels", {}).values()):
            raise Invalid("labels still escaped")

    def check_contact_point(self, body: Any) -> None:
        _require(body, "uid", "name", "type", "settings")
        if body["type"] == "webhook" and not str(body["settings"].get("url", "")).startswith("http"):
            raise Invalid("webhook url")

    def check_policy(self, body: Any) -> None:
        names = {cp["name"] for cp in self.contact_points.values()}

        def walk(route: dict[str, Any]) -> None:
            if "receiver" in route and route["receiver"] not in names:
                raise Invalid(f"unknown receiver {route['receiver']}")
            for matcher in route.get("object_matchers", []):
                if len(matcher) != 3 or matcher[1] not in ("=", "!=", "=~", "!~"):
                    raise Invalid(f"bad matcher {matcher}")
            for child in route.get("routes", []):
                walk(child)

        _require(body, "receiver")
        walk(body)


def _app(state: FakeGrafana) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        state.requests.append((request.method, request.path))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token == VIEWER:
            return web.json_response({"message": "Access denied"}, status=403)
        if token != ADMIN:
            return web.json_response({"message": "invalid API key"}, status=401)
        try:
            return await handler(request)
        except Invalid as exc:
            return web.json_response({"message": str(exc)}, status=400)

    def found(obj: Any) -> web.Response:
        if obj is None:
            return web.json_response({"message": "not found"}, status=404)
        return web.json_response(obj)

    @routes.get("/api/datasources/uid/{uid}")
    async def get_ds(request: web.Request) -> web.Response:
        ds = state.datasources.get(request.match_info["uid"])
        return found(
            None if ds is None else {k: v for k, v in ds.items() if k != "secureJsonData"} | {"id": 1, "orgId": 1}
        )

    @routes.post("/api/datasources")
    async def post_ds(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_datasource(body)
        state.datasources[body["uid"]] = body
        return web.json_response({"id": 1, "message": "Datasource added", "datasource": body})

    @routes.put("/api/datasources/uid/{uid}")
    async def put_ds(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_datasource(body)
        state.datasources[request.match_info["uid"]] = body
        return web.json_response({"message": "Datasource updated"})

    @routes.get("/api/folders/{uid}")
    async def get_folder(request: web.Request) -> web.Response:
        return found(state.folders.get(request.match_info["uid"]))

    @routes.post("/api/folders")
    async def post_folder(request: web.Request) -> web.Response:
        body = await request.json()
        _require(body, "title", "uid")
        state.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
        return web.json_response(state.folders[body["uid"]])

    @routes.put("/api/folders/{uid}")
    async def put_folder(request: web.Request) -> web.Response:
        body = await request.json()
        _require(body, "title")
        state.folders[request.match_info["uid"]]["title"] = body["title"]
        return web.json_response(state.folders[request.match_info["uid"]])

    @routes.get("/api/dashboards/uid/{uid}")
    async def get_dash(request: web.Request) -> web.Response:
        return found(state.dashboards.get(request.match_info["uid"]))

    @routes.post("/api/dashboards/db")
    async def post_dash(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_dashboard(body)
        uid = body["dashboard"]["uid"]
        version = state.dashboards.get(uid, {}).get("dashboard", {}).get("version", 0) + 1
        state.dashboards[uid] = {
            "dashboard": {**body["dashboard"], "id": 7, "version": version},
            "meta": {"folderUid": body["folderUid"], "provisioned": False},
        }
        return web.json_response({"status": "success", "uid": uid, "version": version})

    @routes.get("/api/v1/provisioning/alert-rules/{uid}")
    async def get_rule(request: web.Request) -> web.Response:
        return found(state.rules.get(request.match_info["uid"]))

    @routes.post("/api/v1/provisioning/alert-rules")
    async def post_rule(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_rule(body)
        state.rules[body["uid"]] = {
            **body,
            "id": len(state.rules) + 1,
            "provenance": "api",
            "updated": "2026-03-02T10:00:00Z",
        }
        state.intervals.setdefault((body["folderUID"], body["ruleGroup"]), 60)
        return web.json_response(state.rules[body["uid"]], status=201)

    @routes.put("/api/v1/provisioning/alert-rules/{uid}")
    async def put_rule(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_rule(body)
        state.rules[request.match_info["uid"]] = {**body, "provenance": "api"}
        return web.json_response(body)

    @routes.get("/api/v1/provisioning/folder/{folder}/rule-groups/{group}")
    async def get_group(request: web.Request) -> web.Response:
        key = (request.match_info["folder"], request.match_info["group"])
        if key not in state.intervals:
            return found(None)
        rules = [r for r in state.rules.values() if (r["folderUID"], r["ruleGroup"]) == key]
        return web.json_response(
            {"title": key[1], "folderUid": key[0], "interval": state.intervals[key], "rules": rules}
        )

    @routes.put("/api/v1/provisioning/folder/{folder}/rule-groups/{group}")
    async def put_group(request: web.Request) -> web.Response:
        body = await request.json()
        _require(body, "title", "interval", "rules")
        state.intervals[(request.match_info["folder"], request.match_info["group"])] = int(body["interval"])
        return web.json_response(body)

    @routes.get("/api/v1/provisioning/contact-points")
    async def get_cps(request: web.Request) -> web.Response:
        return web.json_response(list(state.contact_points.values()))

    @routes.post("/api/v1/provisioning/contact-points")
    async def post_cp(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_contact_point(body)
        state.contact_points[body["uid"]] = {**body, "disableResolveMessage": body.get("disableResolveMessage", False)}
        return web.json_response(body, status=202)

    @routes.put("/api/v1/provisioning/contact-points/{uid}")
    async def put_cp(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_contact_point(body)
        state.contact_points[request.match_info["uid"]] = body
        return web.json_response({"message": "contactpoint updated"}, status=202)

    @routes.get("/api/v1/provisioning/policies")
    async def get_policy(request: web.Request) -> web.Response:
        return web.json_response(state.policy)

    @routes.put("/api/v1/provisioning/policies")
    async def put_policy(request: web.Request) -> web.Response:
        body = await request.json()
        state.check_policy(body)
        state.policy = body
        return web.json_response({"message": "policies updated"}, status=202)

    app = web.Application(middlewares=[auth])
    app.add_routes(routes)
    return app


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    state = FakeGrafana()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(state))
    ready = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{port[0]}", state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _sync(url: str, dry_run: bool = False, token: str = ADMIN) -> Any:
    return sync(url, token, ROOT, dry_run, environ=ENV)


def test_first_sync_creates_everything_in_the_shapes_grafana_takes(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    report = _sync(url)
    writes = state.writes
    assert writes.count(("POST", "/api/datasources")) == 1
    assert writes.count(("POST", "/api/folders")) == 1
    assert writes.count(("POST", "/api/dashboards/db")) == len(list((ROOT / "json").glob("*.json"))) == 5
    rules = [
        r for g in yaml.safe_load((ROOT / "provisioning/alerting/rules.yaml").read_text())["groups"] for r in g["rules"]
    ]
    assert writes.count(("POST", "/api/v1/provisioning/alert-rules")) == len(rules)
    assert writes.count(("POST", "/api/v1/provisioning/contact-points")) == 1
    assert writes.count(("PUT", "/api/v1/provisioning/policies")) == 1
    assert len(writes) == 1 + 1 + 5 + len(rules) + 1 + 1
    assert {c.action for c in report.changes} == {"create", "update", "unchanged"}  # policy replaces the default tree

    # What Grafana now holds is what the files say, with file-provisioning interpolation applied.
    ds = state.datasources["llmops-clickhouse"]
    assert ds["jsonData"]["host"] == "clickhouse" and ds["jsonData"]["defaultDatabase"] == "llmops"
    assert ds["secureJsonData"] == {"password": "s3cret"}
    assert state.folders["llmops"]["title"] == "LLMOps"
    spend = json.loads((ROOT / "json" / "spend.json").read_text())
    stored = state.dashboards["llmops-spend"]
    assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == spend
    assert stored["meta"]["folderUid"] == "llmops"
    rule = state.rules["llmops-budget-exceeded"]
    assert rule["labels"]["team"] == '{{ or $labels.team "platform" }}'
    assert rule["data"][0]["model"]["rawSql"].count("$__timeFilter(computed_at)") == 1
    assert rule["ruleGroup"] == "llmops-spend" and rule["folderUID"] == "llmops"
    assert state.contact_points["llmops-oncall-webhook"]["settings"]["url"] == ENV["LLMOPS_ALERT_WEBHOOK_URL"]
    assert state.policy["routes"][0]["object_matchers"] == [["severity", "=", "critical"]]


def test_second_sync_changes_nothing(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    _sync(url)
    before = len(state.writes)
    report = _sync(url)
    assert len(state.writes) == before
    assert report.writes == [] and all(c.action == "unchanged" for c in report.changes)


def test_dry_run_reads_only_and_reports_what_would_change(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    report = _sync(url, dry_run=True)
    assert state.writes == [] and state.datasources == {} and state.dashboards == {}
    assert sum(c.action == "create" for c in report.changes) == 1 + 1 + 5 + 12 + 1
    assert "would create: dashboard llmops-latency" in report.render()
    assert "dry run: nothing written" in report.render()


def test_drift_in_grafana_is_put_back_and_only_that(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    _sync(url)
    state.dashboards["llmops-latency"]["dashboard"]["title"] = "edited in the UI"
    state.rules["llmops-dead-letters"]["for"] = "30m"
    state.intervals[("llmops", "llmops-quality")] = 300
    state.requests.clear()
    report = _sync(url)
    assert sorted((c.kind, c.name) for c in report.writes) == [
        ("alert-rule", "llmops-dead-letters"),
        ("dashboard", "llmops-latency"),
        ("rule-group", "llmops-quality"),
    ]
    assert state.dashboards["llmops-latency"]["dashboard"]["title"] == "LLMOps / Latency"
    assert state.rules["llmops-dead-letters"]["for"] == "0s" and state.intervals[("llmops", "llmops-quality")] == 60


def test_unauthorized_and_forbidden_tokens_give_clear_errors(grafana: tuple[str, FakeGrafana]) -> None:
    url, state = grafana
    with pytest.raises(GrafanaSyncError, match=r"rejected the token \(401 Unauthorized\)"):
        _sync(url, token="wrong")
    with pytest.raises(GrafanaSyncError, match=r"lacks rights.*403 Forbidden.*Admin role"):
        _sync(url, token=VIEWER)
    assert state.writes == []


def test_unreachable_grafana_gives_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(GrafanaSyncError, match=rf"cannot reach Grafana at http://127.0.0.1:{port}"):
        _sync(f"http://127.0.0.1:{port}")


def test_unset_environment_variables_are_named() -> None:
    env = {k: v for k, v in ENV.items() if k != "LLMOPS_ALERT_WEBHOOK_URL"}
    with pytest.raises(GrafanaSyncError, match="not set: LLMOPS_ALERT_WEBHOOK_URL"):
        load_tree(ROOT, env)


def test_cli_dry_run(
    grafana: tuple[str, FakeGrafana], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = grafana
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GRAFANA_TOKEN", ADMIN)
    parser = argparse.ArgumentParser(prog="llmops")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grafana", "sync", "--url", url, "--dry-run"])
    assert args.root == DEFAULT_ROOT == ROOT
    assert run_command(args) == 0
    assert "would create: alert-rule llmops-drift-detected" in capsys.readouterr().out
    assert state.writes == []
    args = parser.parse_args(["grafana", "sync", "--url", url, "--token", "wrong"])
    assert run_command(args) == 1
    assert "401" in capsys.readouterr().err


def test_the_tree_is_what_file_provisioning_reads() -> None:
    tree = load_tree(ROOT, ENV)
    assert [d["uid"] for d in tree.datasources] == ["llmops-clickhouse"]
    assert (tree.folder_uid, tree.folder_title) == ("llmops", "LLMOps")
    assert sorted(d["uid"] for d in tree.dashboards) == [
        "llmops-agents",
        "llmops-latency",
        "llmops-pipeline",
        "llmops-quality",
        "llmops-spend",
    ]
    assert {g["title"]: g["interval"] for g in tree.rule_groups} == {
        "llmops-spend": 60,
        "llmops-latency": 60,
        "llmops-quality": 60,
        "llmops-agents": 60,
        "llmops-pipeline": 60,
    }
    assert tree.policy is not None
    assert copy.deepcopy(tree.policy)["receiver"] == "llmops-oncall"


def test_cli_points_the_data_source_at_the_running_up(
    grafana: tuple[str, FakeGrafana],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 17 §6: one command for a local Grafana next to `llmops up`: no CLICKHOUSE_* variables, no webhook."""
    from llmops.config import Settings
    from llmops.stack_state import publish

    url, state = grafana
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    publish(Settings(data_dir=tmp_path, sql={"port": 18123}), "127.0.0.1:9092", "127.0.0.1")  # what `up` writes
    parser = argparse.ArgumentParser(prog="llmops")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grafana", "sync", "--url", url, "--token", ADMIN, "--data-dir", str(tmp_path)])
    assert run_command(args) == 0, capsys.readouterr().err
    json_data = state.datasources["llmops-clickhouse"]["jsonData"]
    assert (json_data["host"], json_data["port"], json_data["protocol"], json_data["defaultDatabase"]) == (
        "127.0.0.1",
        "18123",
        "http",
        "llmops",
    )
    assert state.contact_points == {} and len(state.dashboards) == 5 and state.rules
    out = capsys.readouterr().out
    assert "http://127.0.0.1:18123" in out and "set LLMOPS_ALERT_WEBHOOK_URL" in out
