"""Expand a dashboard or alert query the way Grafana and grafana-clickhouse-datasource do.

Why: Grafana cannot run here, so tests execute every provisioned query against chDB after
this expansion. Each step copies the behaviour of the code that does it in production:

1. ``apply_conditional_all``: the plugin's frontend (``CHDatasource.applyConditionalAll``):
   ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when the variable's current value
   is All or empty, else the condition. Scanned from the last occurrence backwards; the
   arguments split at the first top-level comma; a malformed occurrence stops the scan.
   Dashboards only: alert rules run in the backend, which never sees this macro.
2. ``interpolate_variables``: Grafana's ``templateSrv.replace`` with the plugin's format
   function: ``$var``, ``${var}`` and ``[[var]]``; a multi-value selection becomes
   ``'a','b'`` (quoted, comma-separated, not escaped), a single value is inserted as is.
   ``${var:raw}``, ``${var:csv}`` and ``${var:singlequote}`` follow Grafana's formats.
3. ``expand_backend_macros``: the plugin's Go macros (``pkg/macros/macros.go``) as
   interpolated by ``grafana-plugin-sdk-go/data/sqlutil``: ``$__name`` must end at a word
   boundary; arguments only when ``(`` follows the name directly, split at commas outside
   nested parentheses and trimmed; a missing ``)`` is an error. Times are Unix seconds
   (``toDateTime(<s>)``) or milliseconds (``fromUnixTimestamp64Milli(<ms>)``); the interval
   is at least one second (or millisecond), truncated to an integer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "ALL",
    "MacroError",
    "TimeRange",
    "Variable",
    "BACKEND_MACROS",
    "apply_conditional_all",
    "interpolate_variables",
    "expand_backend_macros",
    "render_panel_query",
    "render_alert_query",
    "template_variable_names",
]

ALL = "$__all"
_CONDITIONAL_ALL = "$__conditionalAll("


class MacroError(ValueError):
    """The query cannot be expanded (bad argument count, unbalanced parentheses, unknown macro)."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """The panel's time range (aware datetimes) and the query interval Grafana computed for it."""

    start: datetime
    end: datetime
    interval: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds must be timezone-aware")

    @classmethod
    def relative(
        cls, now: datetime, from_s: int, to_s: int = 0, interval: timedelta = timedelta(minutes=1)
    ) -> TimeRange:
        """An alert rule's relativeTimeRange (seconds before the evaluation time)."""
        return cls(now - timedelta(seconds=from_s), now - timedelta(seconds=to_s), interval)


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard template variable as the plugin receives it.

    ``current`` is the selected value list (``[ALL]`` when All is selected); ``options``
    are every value the variable offers, used when All is selected and the variable is
    interpolated outside ``$__conditionalAll``.
    """

    name: str
    current: tuple[str, ...]
    options: tuple[str, ...] = field(default_factory=tuple)
    multi: bool = True

    @property
    def all_selected(self) -> bool:
        return ALL in self.current

    def values(self) -> list[str]:
        return list(self.options) if self.all_selected else list(self.current)


def _macro_args(text: str, open_index: int) -> list[str] | None:
    """The plugin's getMacroArgs: split at depth-1 commas from the '(' at open_index; None if unclosed."""
    args: list[str] = []
    depth = 0
    last = open_index + 1
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            args.append(text[last:index])
            last = index + 1
        if depth == 0:
            args.append(text[last:index])
            return args
    return None


_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    """``$__conditionalAll(cond, $var)`` -> ``1=1`` on All or empty, else ``cond``."""
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        params = _macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if params is None or len(params) != 2:
            return sql
        phrase = params[0]
        match = _VAR_IN_ARG.search(params[1].strip())
        if match:
            variable = variables.get(match.group(0))
            if variable is not None:
                value = ",".join(variable.current)
                if value in ("", ALL):
                    phrase = "1=1"
        original = f"{_CONDITIONAL_ALL}{params[0]},{params[1]})"
        sql = sql.replace(original, phrase, 1)
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# Grafana's variable regex: $var, [[var]] / [[var:fmt]], ${var} / ${var.path} / ${var:fmt}.
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")


def _plugin_format(values: list[str], multi: bool) -> str:
    if multi:
        return "'" + "','".join(values) + "'"
    return values[0] if values else ""


def _format(values: list[str], multi: bool, fmt: str | None) -> str:
    if fmt is None:
        return _plugin_format(values, multi)
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    raise MacroError(f"variable format {fmt!r} is not supported here")


def interpolate_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Grafana's templateSrv.replace with the plugin's format; unknown names stay as written."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)
        values = variable.values()
        return _format(values, variable.multi or len(values) > 1, fmt)

    return _VARIABLE.sub(replace, sql)


def template_variable_names(sql: str) -> set[str]:
    """Names a query refers to as template variables (macros ``$__*`` excluded)."""
    names = set()
    for match in _VARIABLE.finditer(sql):
        name = match.group(1) or match.group(2) or match.group(4)
        if not name.startswith("__"):
            names.add(name)
    return names


# ----------------------------------------------------------------------------- backend macros


def _seconds(t: datetime) -> int:
    return int(t.timestamp() // 1)


def _millis(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _date_time(t: datetime) -> str:
    return f"toDateTime({_seconds(t)})"


def _date_time64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({_millis(t)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC).strftime('%Y-%m-%d')}')"


def _one(name: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise MacroError(f"$__{name}: expected 1 argument, received {len(args)}")
    return args[0]


def _time_filter(r: TimeRange, args: Sequence[str]) -> str:
    c = _one("timeFilter", args)
    return f"{c} >= {_date_time(r.start)} AND {c} <= {_date_time(r.end)}"


def _time_filter_ms(r: TimeRange, args: Sequence[str]) -> str:
    c = _one("timeFilter_ms", args)
    return f"{c} >= {_date_time64(r.start)} AND {c} <= {_date_time64(r.end)}"


def _date_filter(r: TimeRange, args: Sequence[str]) -> str:
    c = _one("dateFilter", args)
    return f"{c} >= {_date(r.start)} AND {c} <= {_date(r.end)}"


def _date_time_filter(r: TimeRange, args: Sequence[str]) -> str:
    if len(args) != 2:
        raise MacroError(f"$__dateTimeFilter: expected 2 arguments, received {len(args)}")
    d, c = args
    return (
        f"({d} >= {_date(r.start)} AND {d} <= {_date(r.end)}) AND "
        f"({c} >= {_date_time(r.start)} AND {c} <= {_date_time(r.end)})"
    )


def _interval_seconds(r: TimeRange) -> int:
    return int(max(r.interval.total_seconds(), 1))


def _interval_millis(r: TimeRange) -> int:
    return int(max(r.interval // timedelta(milliseconds=1), 1))


def _time_interval(r: TimeRange, args: Sequence[str]) -> str:
    return f"toStartOfInterval(toDateTime({_one('timeInterval', args)}), INTERVAL {_interval_seconds(r)} second)"


def _time_interval_ms(r: TimeRange, args: Sequence[str]) -> str:
    return (
        f"toStartOfInterval(toDateTime64({_one('timeInterval_ms', args)}, 3), "
        f"INTERVAL {_interval_millis(r)} millisecond)"
    )


MacroFunc = Callable[[TimeRange, Sequence[str]], str]

BACKEND_MACROS: Mapping[str, MacroFunc] = {
    "fromTime": lambda r, a: _date_time(r.start),
    "toTime": lambda r, a: _date_time(r.end),
    "fromTime_ms": lambda r, a: _date_time64(r.start),
    "toTime_ms": lambda r, a: _date_time64(r.end),
    "timeFilter": _time_filter,
    "timeFilter_ms": _time_filter_ms,
    "dateFilter": _date_filter,
    "dateTimeFilter": _date_time_filter,
    "dt": _date_time_filter,
    "timeInterval": _time_interval,
    "timeInterval_ms": _time_interval_ms,
    "interval_s": lambda r, a: str(_interval_seconds(r)),
}


def _parse_args(text: str, start: int) -> tuple[list[str] | None, int]:
    """sqlutil's parseArgs: args only if '(' is at `start`; returns (args, end index after ')')."""
    if start >= len(text) or text[start] != "(":
        return None, start
    depth = 0
    args: list[str] = []
    last = start + 1
    for index in range(start, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(text[last:index])
                return [a.strip() for a in args], index + 1
        elif char == "," and depth == 1:
            args.append(text[last:index])
            last = index + 1
    raise MacroError(f"missing closing bracket after {text[max(0, start - 20) : start + 20]!r}")


def expand_backend_macros(sql: str, time_range: TimeRange) -> str:
    """The plugin backend's macros; every ``$__name`` it does not know is an error here."""
    for name, func in BACKEND_MACROS.items():
        pattern = re.compile(r"\$__" + re.escape(name) + r"\b")
        # Replace each occurrence with its own expansion (same text gives the same result).
        while True:
            match = pattern.search(sql)
            if match is None:
                break
            args, end = _parse_args(sql, match.end())
            expanded = func(time_range, args if args is not None else [])
            sql = sql[: match.start()] + expanded + sql[end if args is not None else match.end() :]
    leftover = re.search(r"\$__\w+", sql)
    if leftover:
        raise MacroError(f"unknown or unexpanded macro {leftover.group(0)}")
    return sql


def render_panel_query(sql: str, variables: Mapping[str, Variable], time_range: TimeRange) -> str:
    """What ClickHouse receives for a dashboard panel: frontend steps, then backend macros."""
    sql = apply_conditional_all(sql, variables)
    sql = interpolate_variables(sql, variables)
    return expand_backend_macros(sql, time_range)


def render_alert_query(sql: str, time_range: TimeRange) -> str:
    """What ClickHouse receives for an alert rule: backend macros only (no variables, no conditionalAll)."""
    if _CONDITIONAL_ALL in sql:
        raise MacroError("$__conditionalAll is expanded by the browser only: alert rules never see it expanded")
    names = template_variable_names(sql)
    if names:
        raise MacroError(f"alert queries cannot use dashboard variables: {sorted(names)}")
    return expand_backend_macros(sql, time_range)
