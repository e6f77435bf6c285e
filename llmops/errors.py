"""Errors a user can cause and fix, as one line that says what to do.

Commands raise `UserError` (a runtime refusal, exit 1) or `UsageError` (the
command line or an input file is wrong, exit 2); `llmops.cli.main` prints the
message on one stderr line and shows the traceback only at DEBUG. The
helpers turn what libraries raise for a user's mistake (ClickHouse's own
messages, YAML syntax errors) into such a line, keeping the engine's words.
"""

from __future__ import annotations

import re

from processors.core.errors import LlmopsError

__all__ = ["UserError", "UsageError", "clickhouse_code", "clickhouse_message", "file_problem"]


class UserError(LlmopsError):
    """Something the user can fix; the message is the whole story (exit code 1)."""

    exit_code = 1


class UsageError(UserError):
    """The command line, a query or an input file is wrong (exit code 2)."""

    exit_code = 2


_CODE = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*)", re.DOTALL)
_EXPECTED = re.compile(r"Expected one of: (.*?)\. \(([A-Z_]+)\)\s*$", re.DOTALL)


def clickhouse_code(exc: BaseException) -> int | None:
    """ClickHouse's error code inside a clickhouse-connect exception (HTTP or chDB), if any."""
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def clickhouse_message(exc: BaseException, max_expected: int = 6) -> str:
    """ClickHouse's own message on one line: the HTTP driver's preamble and the engine's stack trace cut off,
    and a parser's long "Expected one of" list shortened to its first entries."""
    text = str(exc)
    match = _CODE.search(text)
    if not match:
        return " ".join(text.split())
    body = match.group(2).split("\nStack trace", 1)[0]
    body = " ".join(body.split())
    expected = _EXPECTED.search(body)
    if expected:
        items = [item.strip() for item in expected.group(1).split(",")]
        shown = ", ".join(items[:max_expected]) + (", …" if len(items) > max_expected else "")
        body = body[: expected.start()] + f"Expected one of: {shown}. ({expected.group(2)})"
    return f"Code: {match.group(1)}. {body}"


def file_problem(exc: BaseException, path: object) -> str:
    """One line for an input file that does not load: `file:line:col: problem` for YAML syntax, `file: field: problem`
    for a value the model refuses, else `file: reason`."""
    import pydantic
    import yaml

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, yaml.MarkedYAMLError):
            mark = seen.problem_mark or seen.context_mark
            context = seen.context
            if context and seen.context_mark is not None and seen.context_mark is not mark:
                context += f" started at line {seen.context_mark.line + 1}"  # e.g. where the unclosed quote opened
            problem = ", ".join(filter(None, [context, seen.problem]))
            line = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            return f"{path}{line}: {problem or 'invalid YAML'}"
        if isinstance(seen, pydantic.ValidationError):
            problems = [f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}" for e in seen.errors()]
            return f"{path}: " + "; ".join(problems)
        if isinstance(seen, OSError) and seen.strerror:
            return f"{path}: {seen.strerror}"
        if seen.__cause__ is None and seen.__context__ is None:
            break
        seen = seen.__cause__ or seen.__context__
    reason = " ".join(str(seen if seen is not None else exc).split())
    return f"{path}: {reason}"
