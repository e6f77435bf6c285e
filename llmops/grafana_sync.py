"""`llmops grafana sync`: push the provisioning tree in dashboards/ to a running Grafana.

Why: file provisioning needs access to Grafana's disk; a managed or shared Grafana only has
its HTTP API. The same files are read (datasource, dashboards provider folder, dashboard
JSON, alert rules, contact points, notification policy) and applied through grafana-client,
idempotently: each object is read first and written only when it differs, so a second sync
changes nothing and ``dry_run`` reads only.

File-provisioning semantics are kept: ``$VAR`` / ``${VAR}`` in the datasource and contact
points come from the environment of the machine running the sync (Grafana's own does it for
files), ``$$`` in rule labels is a literal ``$``, and rule models are sent verbatim.
Datasource secrets are sent when the datasource is created or its settings change (Grafana
never returns them, so they cannot be compared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import niquests
import yaml
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaUnauthorizedError
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmops.grafana_cli import DEFAULT_ROOT, add_cli
from processors.core.errors import LlmopsError

__all__ = [
    "Action",
    "Change",
    "SyncReport",
    "GrafanaSyncError",
    "GrafanaTarget",
    "ProvisioningTree",
    "load_tree",
    "sync",
    "add_cli",
    "run_command",
    "DEFAULT_ROOT",
]

Action = Literal["create", "update", "unchanged"]
_ENV = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")


class GrafanaSyncError(LlmopsError, RuntimeError):
    """The sync cannot proceed: Grafana unreachable, token rejected, or the files are incomplete."""


class GrafanaTarget(BaseSettings):
    """Where to sync to: flags beat GRAFANA_URL / GRAFANA_TOKEN from the environment."""

    model_config = SettingsConfigDict(env_prefix="GRAFANA_", extra="ignore")

    url: str = "http://127.0.0.1:3000"
    token: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # datasource | folder | dashboard | alert-rule | rule-group | contact-point | policies
    name: str
    action: Action


@dataclass(slots=True)
class SyncReport:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def writes(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def render(self) -> str:
        verb = (
            {"create": "would create", "update": "would update"}
            if self.dry_run
            else {"create": "created", "update": "updated"}
        )
        lines = [f"{verb.get(c.action, 'unchanged')}: {c.kind} {c.name}" for c in self.changes]
        lines.append(f"{len(self.writes)} change(s){' (dry run: nothing written)' if self.dry_run else ''}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ProvisioningTree:
    """The objects of dashboards/, in the shapes Grafana's HTTP API takes."""

    datasources: list[dict[str, Any]]
    folder_uid: str
    folder_title: str
    dashboards: list[dict[str, Any]]
    rule_groups: list[dict[str, Any]]  # {"title", "interval" (s), "rules": [API rule]}
    contact_points: list[dict[str, Any]]
    policy: dict[str, Any] | None


def _expand_env(value: Any, environ: Mapping[str, str], missing: set[str]) -> Any:
    """File provisioning's $VAR / ${VAR} expansion ($$ is a literal $)."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(2)
            if name not in environ:
                missing.add(name)
                return ""
            return environ[name]

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, environ, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, environ, missing) for v in value]
    return value


def _duration_s(text: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", str(text))
    if not match:
        raise GrafanaSyncError(f"unsupported duration {text!r} (use e.g. 30s, 1m, 1h)")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def _yaml_files(directory: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) or {} for p in sorted(directory.glob("*.y*ml"))]


def load_tree(root: Path, environ: Mapping[str, str] | None = None, *, notifications: bool = True) -> ProvisioningTree:
    """Read dashboards/ (root) into API shapes; unset environment variables are an error.

    Without `notifications` the contact points and the notification policy are left out (a local
    Grafana next to `llmops up` shows alerts in its UI without paging anyone)."""
    env = os.environ if environ is None else environ
    missing: set[str] = set()
    prov = root / "provisioning"
    datasources = []
    for doc in _yaml_files(prov / "datasources"):
        for ds in doc.get("datasources", []):
            datasources.append(
                _expand_env({k: v for k, v in ds.items() if k not in ("orgId", "version")}, env, missing)
            )
    providers = [p for doc in _yaml_files(prov / "dashboards") for p in doc.get("providers", [])]
    if len(providers) != 1:
        raise GrafanaSyncError(f"expected one dashboards provider in {prov / 'dashboards'}, found {len(providers)}")
    folder_uid, folder_title = providers[0]["folderUid"], providers[0]["folder"]
    dashboards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((root / "json").glob("*.json"))]
    rule_groups, contact_points, policy = [], [], None
    for doc in _yaml_files(prov / "alerting"):
        for group in doc.get("groups", []):
            if group["folder"] != folder_title:
                raise GrafanaSyncError(
                    f"rule group {group['name']} is in folder {group['folder']!r}, not {folder_title!r}"
                )
            rules = []
            for rule in group["rules"]:
                api_rule = {k: v for k, v in rule.items() if k != "labels"}
                api_rule["labels"] = {k: str(v).replace("$$", "$") for k, v in rule.get("labels", {}).items()}
                api_rule.update({"folderUID": folder_uid, "ruleGroup": group["name"], "orgID": group.get("orgId", 1)})
                rules.append(api_rule)
            rule_groups.append({"title": group["name"], "interval": _duration_s(group["interval"]), "rules": rules})
        for point in doc.get("contactPoints", []) if notifications else []:
            for receiver in point["receivers"]:
                contact_points.append(_expand_env({"name": point["name"], **receiver}, env, missing))
        for tree in doc.get("policies", []) if notifications else []:
            policy = {k: v for k, v in tree.items() if k != "orgId"}
    if missing:
        raise GrafanaSyncError(
            f"environment variables used by dashboards/provisioning are not set: {', '.join(sorted(missing))}"
        )
    return ProvisioningTree(datasources, folder_uid, folder_title, dashboards, rule_groups, contact_points, policy)


def _contains(current: Any, wanted: Any) -> bool:
    """Whether `current` holds everything `wanted` sets; keys Grafana adds (ids, versions, defaults) are ignored."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(_contains(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(_contains(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return current == wanted


def _differs(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    return not _contains(current, wanted)


class _Syncer:
    def __init__(self, api: GrafanaApi, tree: ProvisioningTree, report: SyncReport) -> None:
        self.api = api
        self.tree = tree
        self.report = report

    def _record(self, kind: str, name: str, action: Action, write: Callable[[], Any]) -> None:
        if action != "unchanged" and not self.report.dry_run:
            write()
        self.report.changes.append(Change(kind, name, action))

    def _get(self, read: Callable[[], Any]) -> Any:
        """The object, or None when Grafana answers 404."""
        try:
            return read()
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            raise

    def datasources(self) -> None:
        for ds in self.tree.datasources:
            current = self._get(partial(self.api.datasource.get_datasource_by_uid, ds["uid"]))
            public = {k: v for k, v in ds.items() if k != "secureJsonData"}
            if current is None:
                self._record("datasource", ds["uid"], "create", partial(self.api.datasource.create_datasource, ds))
            elif _differs(public, current):
                self._record(
                    "datasource",
                    ds["uid"],
                    "update",
                    partial(self.api.datasource.update_datasource_by_uid, ds["uid"], ds),
                )
            else:
                self._record("datasource", ds["uid"], "unchanged", lambda: None)

    def folder(self) -> None:
        uid, title = self.tree.folder_uid, self.tree.folder_title
        current = self._get(lambda: self.api.folder.get_folder(uid))
        if current is None:
            self._record("folder", uid, "create", lambda: self.api.folder.create_folder(title, uid=uid))
        elif current.get("title") != title:
            self._record(
                "folder", uid, "update", lambda: self.api.folder.update_folder(uid, title=title, overwrite=True)
            )
        else:
            self._record("folder", uid, "unchanged", lambda: None)

    def dashboards(self) -> None:
        for dash in self.tree.dashboards:
            uid = dash["uid"]
            content = {k: v for k, v in dash.items() if k not in ("id", "version")}  # Grafana owns both
            current = self._get(partial(self.api.dashboard.get_dashboard, uid))
            body = {
                "dashboard": {**content, "id": None},
                "folderUid": self.tree.folder_uid,
                "overwrite": True,
                "message": "llmops grafana sync",
            }
            if current is None:
                action: Action = "create"
            elif (
                _differs(content, current.get("dashboard", {}))
                or current.get("meta", {}).get("folderUid") != self.tree.folder_uid
            ):
                action = "update"
            else:
                action = "unchanged"
            self._record("dashboard", uid, action, partial(self.api.dashboard.update_dashboard, body))

    def alert_rules(self) -> None:
        provisioning = self.api.alertingprovisioning
        for group in self.tree.rule_groups:
            for rule in group["rules"]:
                uid = rule["uid"]
                current = self._get(partial(provisioning.get_alertrule, uid))
                if current is None:
                    self._record("alert-rule", uid, "create", partial(provisioning.create_alertrule, rule))
                elif _differs(rule, current):
                    self._record("alert-rule", uid, "update", partial(provisioning.update_alertrule, uid, rule))
                else:
                    self._record("alert-rule", uid, "unchanged", lambda: None)
            name = group["title"]
            current_group = self._get(partial(provisioning.get_rule_group, self.tree.folder_uid, name))
            if current_group is not None and current_group.get("interval") != group["interval"]:
                body = {**current_group, "interval": group["interval"]}
                self._record(
                    "rule-group",
                    name,
                    "update",
                    partial(provisioning.update_rule_group, self.tree.folder_uid, name, body),
                )
            else:
                self._record("rule-group", name, "unchanged", lambda: None)

    def contact_points(self) -> None:
        provisioning = self.api.alertingprovisioning
        existing = {cp.get("uid"): cp for cp in provisioning.get_contactpoints() or []}
        for point in self.tree.contact_points:
            uid = point["uid"]
            current = existing.get(uid)
            if current is None:
                self._record("contact-point", uid, "create", partial(provisioning.create_contactpoint, point))
            elif _differs(point, current):
                self._record("contact-point", uid, "update", partial(provisioning.update_contactpoint, uid, point))
            else:
                self._record("contact-point", uid, "unchanged", lambda: None)

    def policy(self) -> None:
        if self.tree.policy is None:
            return
        provisioning = self.api.alertingprovisioning
        current = provisioning.get_notification_policy_tree() or {}
        wanted = self.tree.policy
        action: Action = "update" if _differs(wanted, current) else "unchanged"
        self._record("policies", "root", action, lambda: provisioning.set_notification_policy_tree(wanted))


def _friendly(exc: Exception, url: str) -> GrafanaSyncError:
    if isinstance(exc, GrafanaUnauthorizedError):
        return GrafanaSyncError(
            f"Grafana at {url} rejected the token (401 Unauthorized): check --token / GRAFANA_TOKEN"
        )
    if isinstance(exc, GrafanaClientError) and exc.status_code == 403:
        return GrafanaSyncError(
            f"the token lacks rights on Grafana at {url} (403 Forbidden: {exc.message}): "
            "use a service account token with the Admin role"
        )
    if isinstance(exc, niquests.exceptions.ConnectionError) or (
        isinstance(exc, GrafanaException) and exc.status_code == 0
    ):
        return GrafanaSyncError(f"cannot reach Grafana at {url}: {exc} (is it running, and is the URL right?)")
    if isinstance(exc, GrafanaException):
        return GrafanaSyncError(f"Grafana at {url} refused a request: {exc.message}")
    return GrafanaSyncError(f"Grafana sync failed against {url}: {exc}")


def sync(
    url: str,
    token: str,
    root: Path,
    dry_run: bool,
    *,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
    notifications: bool = True,
) -> SyncReport:
    """Create or update everything under `root` in the Grafana at `url`; with dry_run, only read."""
    tree = load_tree(root, environ, notifications=notifications)
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = SyncReport(dry_run=dry_run)
    syncer = _Syncer(api, tree, report)
    try:
        syncer.datasources()
        syncer.folder()
        syncer.dashboards()
        syncer.alert_rules()
        syncer.contact_points()
        syncer.policy()
    except (GrafanaException, niquests.exceptions.RequestException) as exc:
        raise _friendly(exc, url) from exc
    return report


def local_stack_environ(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str] | None:
    """The data source variables for the SQL endpoint of the `llmops up` running on `data_dir`, when the
    environment names no ClickHouse of its own (CLICKHOUSE_HOST unset); None otherwise."""
    from llmops.stack_state import running_stack

    if "CLICKHOUSE_HOST" in environ:
        return None
    stack = running_stack(data_dir)
    if stack is None or not stack.sql_port:
        return None
    local = {
        "CLICKHOUSE_HOST": stack.host,
        "CLICKHOUSE_PORT": str(stack.sql_port),
        "CLICKHOUSE_PROTOCOL": "http",
        "CLICKHOUSE_DATABASE": stack.database,
        "CLICKHOUSE_GRAFANA_USER": "default",
        "CLICKHOUSE_GRAFANA_PASSWORD": "",
    }
    return {**environ, **local}


def run_command(args: argparse.Namespace) -> int:
    """Run `llmops grafana sync` from parsed arguments; errors are printed, exit code 1."""
    target = GrafanaTarget(**{k: v for k, v in (("url", args.url), ("token", args.token)) if v is not None})
    if target.token is None:
        print("llmops grafana sync: a token is required (--token or GRAFANA_TOKEN)", file=sys.stderr)
        return 2
    environ = local_stack_environ(args.data_dir, os.environ)
    notifications = environ is None or "LLMOPS_ALERT_WEBHOOK_URL" in environ
    try:
        report = sync(
            target.url,
            target.token.get_secret_value(),
            args.root,
            args.dry_run,
            environ=environ,
            notifications=notifications,
        )
    except GrafanaSyncError as exc:
        print(f"llmops grafana sync: {exc}", file=sys.stderr)
        return 1
    if environ is not None:
        print(
            f"data source: the SQL endpoint of `llmops up` on {args.data_dir} (http://{environ['CLICKHOUSE_HOST']}:{environ['CLICKHOUSE_PORT']})"
        )
    if not notifications:
        print("contact point and notification policy left out: set LLMOPS_ALERT_WEBHOOK_URL to route alerts")
    print(report.render())
    return 0
