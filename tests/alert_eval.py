"""Grafana's alert evaluation over a stored history, for tests (Grafana itself cannot run here).

A provisioned rule (dashboards/provisioning/alerting/rules.yaml) is evaluated the way Grafana's
unified alerting does it, step by step over event time:

- every ``interval`` (the rule group's evaluation interval) the query ``A`` runs over its own
  ``relativeTimeRange`` ending at the evaluation time, with the plugin's backend macros
  expanded (``tests.grafana_macros.render_alert_query``);
- each row is one series: string columns are its labels, the single numeric column its value
  (the ClickHouse plugin's table → long-frame conversion);
- ``B`` (reduce): ``last`` of the series (a table row is a one-point series; NULL or NaN
  reduces to NaN under ``dropNN`` and ``strict`` alike);
- ``C`` (threshold): ``gt``/``lt``/``within_range``/``outside_range`` against its params; NaN
  never fires;
- per alert instance (final labels) a state machine: Normal → Pending when the condition
  first holds (Alerting at once when ``for`` is 0) → Alerting once it held for ``for``;
  back to Normal the first time it does not hold. No rows at all is NoData, mapped by
  ``noDataState`` (OK → Normal; Alerting → an instance without labels that goes through
  Pending like any other).

Rule labels are rendered over the query labels for the template form the rules use
(``{{ or $labels.x "default" }}``, ``$$`` being file provisioning's literal ``$``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tests.grafana_macros import TimeRange, render_alert_query

__all__ = ["Evaluation", "RuleRun", "evaluate_once", "run_rule", "parse_duration"]

_NUMERIC = re.compile(r"^(Nullable\()?(U?Int\d+|Float\d+|Decimal.*)\)?$")
_LABEL_TEMPLATE = re.compile(r'^\{\{ or \$labels\.(\w+) "([^"]*)" \}\}$')
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

Labels = frozenset[tuple[str, str]]


def parse_duration(text: str | int) -> timedelta:
    """Grafana's `for` / interval strings: 0s, 90s, 5m, 1h30m."""
    if isinstance(text, int):
        return timedelta(seconds=text)
    match = _DURATION.match(text.strip())
    if match is None or not text.strip():
        raise ValueError(f"not a Grafana duration: {text!r}")
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return timedelta(hours=h, minutes=m, seconds=s)


def _instance_labels(rule: dict[str, Any], query_labels: dict[str, str]) -> dict[str, str]:
    out = dict(query_labels)
    for key, raw in rule.get("labels", {}).items():
        value = str(raw).replace("$$", "$")
        match = _LABEL_TEMPLATE.match(value)
        out[key] = (query_labels.get(match.group(1)) or match.group(2)) if match else value
    return out


def _condition(evaluator: dict[str, Any], value: float) -> bool:
    if math.isnan(value):
        return False
    kind, params = evaluator["type"], evaluator["params"]
    if kind == "gt":
        return value > params[0]
    if kind == "lt":
        return value < params[0]
    if kind == "within_range":
        return params[0] < value < params[1]
    if kind == "outside_range":
        return value < params[0] or value > params[1]
    raise ValueError(f"threshold type {kind!r} is not supported by this evaluator")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation: the reduced value of every instance and whether its condition holds."""

    at: datetime
    values: dict[Labels, float]
    holds: dict[Labels, bool]
    no_data: bool


def evaluate_once(client: Any, rule: dict[str, Any], at: datetime) -> Evaluation:
    """Query → reduce → threshold at one evaluation time."""
    nodes = {node["refId"]: node for node in rule["data"]}
    query = nodes["A"]
    window = query["relativeTimeRange"]
    sql = render_alert_query(query["model"]["rawSql"], TimeRange.relative(at, window["from"], window["to"]))
    columns = [(r[0], r[1]) for r in client.query(f"DESCRIBE ({sql})").result_rows]
    names, types = [n for n, _ in columns], [t for _, t in columns]
    numeric = [i for i, t in enumerate(types) if _NUMERIC.match(t)]
    strings = [i for i, t in enumerate(types) if "String" in t]
    if len(numeric) != 1 or len(numeric) + len(strings) != len(types):
        raise AssertionError(f"{rule['uid']}: a rule query returns string labels and one number, not {columns}")
    reduce_node, threshold_node = nodes["B"]["model"], nodes["C"]["model"]
    if (
        reduce_node.get("type") != "reduce"
        or reduce_node.get("expression") != "A"
        or reduce_node.get("reducer") != "last"
    ):
        raise AssertionError(f"{rule['uid']}: B must reduce A with last, not {reduce_node}")
    if threshold_node.get("type") != "threshold" or threshold_node.get("expression") != "B" or rule["condition"] != "C":
        raise AssertionError(f"{rule['uid']}: C must be the threshold on B and the condition")
    evaluator = threshold_node["conditions"][0]["evaluator"]
    values: dict[Labels, float] = {}
    for row in client.query(sql).result_rows:
        raw = row[numeric[0]]
        # A table row is a one-point series: NULL/NaN reduces to NaN whether dropNN drops the point
        # (last of nothing) or strict keeps it; NaN never passes a threshold.
        value = math.nan if raw is None else float(raw)
        labels = frozenset(_instance_labels(rule, {names[i]: str(row[i]) for i in strings if row[i] != ""}).items())
        if labels in values:
            raise AssertionError(f"{rule['uid']}: two rows give the same labels {dict(labels)}")
        values[labels] = value
    if not values:
        return Evaluation(at, {}, {}, True)
    return Evaluation(at, values, {k: _condition(evaluator, v) for k, v in values.items()}, False)


@dataclass(slots=True)
class _State:
    state: str = "Normal"  # Normal | Pending | Alerting
    active_at: datetime | None = None
    value: float = math.nan


@dataclass(slots=True)
class RuleRun:
    """The outcome of evaluating a rule at every interval over [start, end]."""

    evaluations: list[Evaluation] = field(default_factory=list)
    states: dict[Labels, _State] = field(default_factory=dict)
    fired: dict[Labels, datetime] = field(default_factory=dict)  # instance -> first time it was Alerting

    def alerting(self) -> dict[Labels, float]:
        """Instances Alerting at the last evaluation, with their value."""
        return {k: s.value for k, s in self.states.items() if s.state == "Alerting"}

    def ever_pending(self) -> set[Labels]:
        return {k for e in self.evaluations for k, held in e.holds.items() if held}


_NO_DATA: Labels = frozenset({("alertname", "DatasourceNoData")})


def _ticks(start: datetime, end: datetime, interval: timedelta) -> Iterator[datetime]:
    at = start
    while at <= end:
        yield at
        at += interval


def run_rule(client: Any, rule: dict[str, Any], start: datetime, end: datetime, interval: str | int = "1m") -> RuleRun:
    """Evaluate `rule` every `interval` from `start` to `end` with Grafana's Pending/`for` semantics."""
    hold_for = parse_duration(rule.get("for", "0s"))
    run = RuleRun()
    for at in _ticks(start, end, parse_duration(interval)):
        evaluation = evaluate_once(client, rule, at)
        run.evaluations.append(evaluation)
        holds = dict(evaluation.holds)
        values = dict(evaluation.values)
        if evaluation.no_data and rule["noDataState"] == "Alerting":
            holds, values = {_NO_DATA: True}, {_NO_DATA: math.nan}
        for labels in set(run.states) | set(holds):
            state = run.states.setdefault(labels, _State())
            state.value = values.get(labels, math.nan)
            if not holds.get(labels, False):
                state.state, state.active_at = "Normal", None
                continue
            if state.state == "Normal":
                state.active_at = at
                state.state = "Pending"
            assert state.active_at is not None
            if state.state == "Pending" and at - state.active_at >= hold_for:
                state.state = "Alerting"
                run.fired.setdefault(labels, at)
    return run
