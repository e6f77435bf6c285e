"""What a query sent to the SQL endpoint may do, decided on ClickHouse's own parse of it.

A text filter reads a query differently from the engine (`INTO  OUTFILE` with
two spaces, `'/*'` inside a string, `DESCRIBE file(…)`); only the engine's
parser sees what the engine will run. So the guard hands the query text to
chDB as a *query parameter* (data, never executed): `formatQuery` parses it
as exactly one statement (a second statement is a syntax error there) and
prints its canonical text, and `parseQueryToJSON` returns the syntax tree of
that canonical text. The policy walks the tree and allows one statement of an
allowed kind: SELECT (with UNION/INTERSECT/EXCEPT, WITH, sub-queries), SHOW
TABLES/DATABASES/COLUMNS, DESCRIBE TABLE, EXISTS TABLE, EXPLAIN of a SELECT;
reading only the pipeline's database and the `system` tables clients read
for their schema browsers; no table function (file, url, s3, remote, python,
…), no storage-reaching function (file, dictGet, joinGet, …), no INTO
OUTFILE, no SETTINGS, no identifier-typed query parameter (it could name
another table), a FORMAT only from the engine's list of output formats.

What runs is the canonical text whose tree was checked, so the check and the
execution see the same statement. `parseQueryToJSON` cannot print DESCRIBE
and EXISTS nodes; for those the canonical text (which the formatter starts
with `DESCRIBE TABLE` / `EXISTS TABLE`) is turned into `SELECT * FROM <same
table expression and clauses>` and that tree is checked instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from processors.core.errors import PermanentError

__all__ = ["CheckedQuery", "GRAFANA_SYSTEM_TABLES", "QueryGuard", "QueryRefused"]

# What Grafana's ClickHouse plugin (SHOW DATABASES/TABLES, DESC TABLE, system.columns,
# system.functions, version()) and clickhouse-connect's HTTP client (system.settings at
# connect) read for their schema browsers and handshakes; `one` is SELECT's implicit table.
GRAFANA_SYSTEM_TABLES = frozenset({"databases", "tables", "columns", "functions", "settings", "one"})

# Scalar functions that reach outside the query's tables: a local file, dictionaries or
# Join tables by name (possibly in another database), a table's metadata, model files.
_DENIED_FUNCTIONS = frozenset({
    "file", "joinget", "joingetornull", "hascolumnintable", "catboostevaluate", "naivebayesclassifier",
    "showcertificate", "getmacro", "globalvariable",
})  # fmt: skip
_DENIED_FUNCTION_PREFIXES = ("dict",)  # dictGet*, dictHas, dictIsIn, dictGetHierarchy, …
# Membership tests whose right side may name a table: `x IN db.table`.
_IN_FUNCTIONS = frozenset({
    "in", "notin", "globalin", "globalnotin", "nullin", "notnullin", "globalnullin", "globalnotnullin",
})  # fmt: skip
# Output formats that read a schema or template file named by a setting.
_FILE_BACKED_FORMATS = frozenset({"template", "protobuf", "protobuflist", "protobufsingle", "capnproto"})
_EXPLAIN_KINDS = frozenset(
    {"EXPLAIN", "EXPLAIN AST", "EXPLAIN SYNTAX", "EXPLAIN PLAN", "EXPLAIN PIPELINE", "EXPLAIN ESTIMATE"}
)
_SHOW_TABLES_KEYS = frozenset(
    {"type", "databases", "from", "like", "not_like", "case_insensitive_like", "where_expression", "limit_length"}
)
_OUTPUT_KEYS = frozenset({"format_ast", "is_outfile_append", "is_outfile_truncate", "is_into_outfile_with_stdout"})


class QueryRefused(PermanentError):
    """The query is not allowed (or not valid); `code` is the ClickHouse error code to answer with."""

    def __init__(self, message: str, code: int = 164, name: str = "READONLY") -> None:
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass(frozen=True)
class CheckedQuery:
    sql: str  # the engine's canonical text of the one statement that was checked
    kind: str  # select | show | describe | exists | explain
    format: str | None  # the statement's FORMAT clause, if any


Run = Callable[[str, Mapping[str, str]], bytes]  # (sql, query parameters) -> TSVRaw bytes


class QueryGuard:
    """The endpoint's policy. `run` executes a parameterised helper query on a chDB handle."""

    def __init__(
        self, database: str, output_formats: Iterable[str], system_tables: Iterable[str] = GRAFANA_SYSTEM_TABLES
    ) -> None:
        self.database = database
        self.system_tables = frozenset(system_tables)
        self.output_formats = {f.lower(): f for f in output_formats if f.lower() not in _FILE_BACKED_FORMATS}

    def check(self, sql: str, run: Run) -> CheckedQuery:
        """Parse `sql` with the engine and return what may run, or raise QueryRefused."""
        if not sql.strip():
            raise QueryRefused("Empty query.", 62, "SYNTAX_ERROR")
        canonical = self._engine(run, "SELECT formatQuery({q:String})", sql).decode().strip()
        for keyword, table_kind in (("DESCRIBE TABLE", "describe"), ("EXISTS TABLE", "exists")):
            if canonical.startswith(keyword) and canonical[len(keyword) : len(keyword) + 1].isspace():
                probe = "SELECT * FROM " + canonical[len(keyword) :].lstrip()
                tree = self._tree(run, probe)
                selects = tree.get("list_of_selects", {}).get("children", [])
                if (
                    tree.get("type") != "SelectWithUnionQuery"
                    or len(selects) != 1
                    or len(selects[0].get("tables", {}).get("children", [])) != 1
                ):
                    raise QueryRefused(f"{keyword} takes one table.")
                return CheckedQuery(canonical, table_kind, self._check_statement(tree))
        tree = self._tree(run, canonical)
        kind = {
            "SelectWithUnionQuery": "select",
            "ShowTablesQuery": "show",
            "ShowColumnsQuery": "show",
            "ExplainQuery": "explain",
        }.get(str(tree.get("type")))
        if kind is None:
            raise QueryRefused(self._refusal(canonical))
        if kind == "show":
            self._check_show(tree)
        if kind == "explain":
            if tree.get("kind") not in _EXPLAIN_KINDS or set(tree) - {"type", "kind", "query"} - _OUTPUT_KEYS:
                raise QueryRefused(
                    "Only EXPLAIN [AST|SYNTAX|PLAN|PIPELINE|ESTIMATE] of a SELECT, without explain settings."
                )
            if tree["query"].get("type") != "SelectWithUnionQuery":
                raise QueryRefused("EXPLAIN is allowed for a SELECT only.")
        return CheckedQuery(canonical, kind, self._check_statement(tree))

    # -- the policy on the tree ------------------------------------------------

    def _check_statement(self, tree: dict[str, Any]) -> str | None:
        for node in _nodes(tree):
            self._check_node(node)
        fmt = tree.get("format_ast")
        if fmt is None:
            return None
        name = str(fmt.get("name", ""))
        if name.lower() not in self.output_formats:
            raise QueryRefused(f"Unknown or file-backed output format {name!r}.", 73, "UNKNOWN_FORMAT")
        return self.output_formats[name.lower()]

    def _check_node(self, node: dict[str, Any]) -> None:
        if "out_file" in node or node.get("is_into_outfile_with_stdout"):
            raise QueryRefused("INTO OUTFILE is not allowed: results come back in the HTTP response.")
        if "settings_ast" in node or (
            isinstance(node.get("settings"), dict) and node["settings"].get("type") == "SetQuery"
        ):
            raise QueryRefused("SETTINGS clauses are not allowed on this endpoint; its limits are fixed by the server.")
        kind = node.get("type")
        if kind == "TableExpression" and "table_function" in node:
            name = node["table_function"].get("name", "?")
            raise QueryRefused(
                f"Table function {name}() is not allowed: only tables of {self.database} and system can be read."
            )
        if kind == "TableIdentifier":
            self._check_table(node)
        if kind == "QueryParameter" and str(node.get("param_type", "")).strip().lower() == "identifier":
            raise QueryRefused(
                "Identifier query parameters are not allowed: name tables and columns in the query text."
            )
        if kind == "Function":
            name = str(node.get("name", "")).lower()
            if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_FUNCTION_PREFIXES):
                raise QueryRefused(
                    f"Function {node.get('name')}() is not allowed: it reads outside the query's tables."
                )
            if name in _IN_FUNCTIONS:
                args = node.get("arguments", {}).get("children", [])
                if len(args) == 2 and args[1].get("type") == "Identifier":
                    self._check_table(args[1])

    def _check_table(self, node: dict[str, Any]) -> None:
        parts = node.get("name_parts") or [node.get("name", "")]
        if len(parts) == 1:
            return  # the current database, always the pipeline's own (or a WITH name)
        database, table = parts[0], ".".join(parts[1:])
        if database == self.database:
            return
        if database == "system" and table in self.system_tables:
            return
        allowed = ", ".join(f"system.{t}" for t in sorted(self.system_tables))
        raise QueryRefused(
            f"Table {database}.{table} is not served: only database {self.database} and {allowed}.",
            497,
            "ACCESS_DENIED",
        )

    def _check_show(self, tree: dict[str, Any]) -> None:
        if tree["type"] == "ShowTablesQuery":
            if set(tree) - _SHOW_TABLES_KEYS - _OUTPUT_KEYS - {"settings_ast", "out_file"}:
                raise QueryRefused("Only SHOW TABLES [FROM db] [LIKE …] and SHOW DATABASES.")
            database = tree.get("from", {}).get("name", self.database)
        else:
            database = tree.get("database", self.database)
        if database not in (self.database, "system"):
            raise QueryRefused(
                f"Database {database} is not served: only {self.database} and system.", 497, "ACCESS_DENIED"
            )

    # -- talking to the parser ---------------------------------------------------

    def _tree(self, run: Run, canonical: str) -> dict[str, Any]:
        try:
            tree = json.loads(self._engine(run, "SELECT parseQueryToJSON({q:String})", canonical))
        except QueryRefused as refused:
            if refused.code == 36:  # the statement kind has no JSON form: not one we allow
                raise QueryRefused(self._refusal(canonical)) from None
            raise
        if not isinstance(tree, dict):
            raise QueryRefused(self._refusal(canonical))
        return tree

    @staticmethod
    def _engine(run: Run, helper: str, text: str) -> bytes:
        try:
            return run(helper + " FORMAT TSVRaw", {"q": _escaped(text)})
        except Exception as exc:  # the parser's own message says what is wrong with the text
            message = str(exc)
            code, name = _code_of(message)
            head = message[message.find("Code: ") :] if "Code: " in message else message
            head = head.split(": In scope SELECT ", 1)[0]
            if code == 0:
                raise
            raise QueryRefused(head, code, name) from None

    @staticmethod
    def _refusal(canonical: str) -> str:
        head = " ".join(canonical.split()[:2])
        return (
            f"This endpoint is read-only: one SELECT, SHOW TABLES/DATABASES/COLUMNS, DESCRIBE TABLE, EXISTS TABLE "
            f"or EXPLAIN statement (got {head} …)."
        )


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict in the JSON tree, iteratively (a deep tree must not exhaust the Python stack)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _escaped(text: str) -> str:
    """A query parameter's value is read in ClickHouse's escaped text format: escape what it unescapes."""
    return text.translate(_ESCAPES)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _code_of(message: str) -> tuple[int, str]:
    start = message.find("Code: ")
    if start < 0:
        return 0, ""
    digits = message[start + 6 :].split(".", 1)[0]
    name = message.rsplit("(", 1)[-1].rstrip(") \n") if message.rstrip().endswith(")") else ""
    return (int(digits), name) if digits.isdigit() else (0, "")
