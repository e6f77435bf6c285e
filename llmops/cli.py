"""`llmops` command line. Every flag maps to a setting (see llmops.config); flags beat env beats TOML."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from llmops.config import Settings, load_settings
from llmops.logs import setup_logging

__all__ = ["main", "build_parser"]

# flag, settings key, type, help. Help text comes from the settings model's field descriptions.
_COMMON = [
    ("--data-dir", "data_dir", Path),
    ("--log-level", "log_level", str),
    ("--kafka", "kafka.bootstrap", str),
    ("--clickhouse", "clickhouse.dsn", str),
    ("--database", "clickhouse.database", str),
]
_SERVING = [
    ("--listen", "receiver.listen", str),
    ("--otlp-grpc-port", "receiver.grpc_port", int),
    ("--otlp-http-port", "receiver.http_port", int),
    ("--sql-port", "sql.port", int),
    ("--partitions", "kafka.partitions", int),
    ("--topic", "kafka.topic", str),
    ("--dead-letter-topic", "kafka.dead_letter_topic", str),
    ("--group-id", "kafka.group_id", str),
    ("--session-timeout", "kafka.session_timeout_s", float),
    ("--heartbeat-interval", "kafka.heartbeat_interval_s", float),
    ("--max-request-bytes", "receiver.max_request_bytes", int),
    ("--batch-max-records", "processor.batch_max_records", int),
    ("--batch-max-wait", "processor.batch_max_wait_s", float),
    ("--pricing-file", "processor.pricing_file", Path),
    ("--budgets-file", "processor.budgets_file", Path),
]


def _only(*flags: str) -> list[tuple[str, str, type]]:
    """The rows of _COMMON + _SERVING for `flags`: each command's --help lists only the options it reads."""
    rows = [row for row in _COMMON + _SERVING if row[0] in flags]
    assert len(rows) == len(flags), "unknown flag in a command's table"
    return rows


_RECEIVE = _only(
    "--log-level",
    "--kafka",
    "--topic",
    "--group-id",
    "--listen",
    "--otlp-grpc-port",
    "--otlp-http-port",
    "--max-request-bytes",
)  # --group-id: the receiver refuses spans while that group lags
_WORKER = [
    row for row in _COMMON + _SERVING if row[0] not in ("--otlp-grpc-port", "--otlp-http-port", "--max-request-bytes")
]
_STORE = _only("--data-dir", "--log-level", "--clickhouse", "--database")
_READER = _STORE + _only("--sql-port")


def _describe(dotted: str) -> str:
    model: Any = Settings
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    field = model.model_fields[leaf]
    env = "LLMOPS_" + "__".join(p.upper() for p in dotted.split("."))
    default = field.default if field.default is not None else "unset"
    return f"{field.description} [env {env}; default {default}]"


def _add_settings_flags(parser: argparse.ArgumentParser, table: list[tuple[str, str, type]]) -> None:
    for flag, key, kind in table:
        metavar = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(
            flag, dest=f"set:{key}", type=kind, default=argparse.SUPPRESS, metavar=metavar, help=_describe(key)
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmops",
        description="Streaming telemetry for LLM applications: OTLP -> Kafka -> processors -> ClickHouse -> Grafana.",
    )
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file [env LLMOPS_CONFIG].")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="Run the whole stack in the foreground until Ctrl-C.")
    _add_settings_flags(up, _COMMON + _SERVING)
    up.add_argument(
        "--demo", action="store_true", help="Also send demo traffic (the live view shows what the store made of it)."
    )
    up.add_argument("--demo-rate", type=float, default=20.0, help="Demo LLM calls per second (default 20).")
    up.add_argument(
        "--live-interval", type=float, default=2.0, help="Seconds between refreshes of the live view (default 2)."
    )

    receive = commands.add_parser("receive", help="Run the OTLP receiver (HTTP + gRPC) writing to Kafka.")
    _add_settings_flags(receive, _RECEIVE)

    worker = commands.add_parser("worker", help="Run a processor worker (Kafka -> ClickHouse).")
    _add_settings_flags(worker, _WORKER)

    migrate = commands.add_parser("migrate", help="Apply ClickHouse migrations (idempotent).")
    _add_settings_flags(migrate, _STORE)
    migrate.add_argument("--print", dest="print_ddl", action="store_true", help="Print the DDL instead of applying it.")
    migrate.add_argument(
        "--retention", action="store_true", help="With --print: the optional TTLs of schemas/retention/ttl.sql instead."
    )
    migrate.add_argument(
        "--cluster",
        default=None,
        metavar="NAME",
        help="With --print: the DDL for the sharded, replicated cluster NAME (ON CLUSTER, Replicated <table>_local "
        "+ Distributed <table>); '{cluster}' leaves the server macro. Apply it with clickhouse-client "
        "(schemas/cluster/README.md).",
    )

    loadgen = commands.add_parser("loadgen", help="Send realistic GenAI traffic through the OpenTelemetry SDK.")
    _add_settings_flags(loadgen, [("--log-level", "log_level", str)])
    loadgen.add_argument(
        "--endpoint",
        default=None,
        help="OTLP endpoint (default http://127.0.0.1:4318, or 127.0.0.1:4317 with --protocol grpc).",
    )
    loadgen.add_argument(
        "--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf", help="OTLP transport."
    )
    loadgen.add_argument(
        "--count",
        type=int,
        default=None,
        help="LLM calls to send as fast as possible (default 1000; 6000 for --scenario drift); "
        "agent runs for --scenario agents (default 100).",
    )
    loadgen.add_argument(
        "--rate", type=float, default=None, help="LLM calls (agents: runs) per second (with --duration)."
    )
    loadgen.add_argument("--duration", type=float, default=None, help="Seconds to run at --rate.")
    loadgen.add_argument("--seed", type=int, default=0, help="Random seed (same seed, same traffic).")
    loadgen.add_argument(
        "--scenario",
        choices=["mixed", "drift", "agents"],
        default="mixed",
        help="mixed: steady traffic. drift: one key switches prompt version halfway and its answers change; "
        "the calls span 4 drift windows of event time (drift.window_s) ending now, "
        "so `llmops report` shows the result. agents: agent runs (nested agents, tools, MCP tools, loops, "
        "runaway runs, evaluation events); prints the ground truth per run, loop and evaluator.",
    )
    loadgen.add_argument(
        "--loop-repeats",
        type=int,
        default=None,
        help="agents: a looping run calls one tool with the same arguments at least this often "
        "(default: the runaway rule's, 5).",
    )
    loadgen.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    loadgen.add_argument("--quiet", action="store_true", help="No progress bar.")

    report = commands.add_parser("report", help="Summarise what is stored (works while `up` runs and after).")
    _add_settings_flags(report, _READER)
    report.add_argument("--json", action="store_true", help="Print JSON instead of tables.")

    from llmops.pricing_cli import add_pricing_parser

    add_pricing_parser(commands, _add_settings_flags, _STORE)  # their own --sql-port/--pricing-file; no --kafka

    budgets = commands.add_parser("budgets", help="Budget status: spend so far, fraction, projected end of period.")
    _add_settings_flags(budgets, _READER)
    budgets.add_argument(
        "--budgets",
        type=Path,
        default=None,
        help="Budgets YAML (default: the running stack's, else LLMOPS_PROCESSOR__BUDGETS_FILE); "
        "format in docs/budgets.md.",
    )
    budgets.add_argument("--json", action="store_true", help="Print JSON.")

    config = commands.add_parser("config", help="Show the effective settings, or the settings reference.")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    show = config_commands.add_parser("show", help="The effective settings after flags, env and file, as JSON.")
    _add_settings_flags(show, _COMMON + _SERVING)
    config_commands.add_parser("docs", help="The settings reference as Markdown (docs/configuration.md).")

    drift = commands.add_parser("drift", help="Drift stage controls.")
    drift_commands = drift.add_subparsers(dest="drift_command", required=True, metavar="SUBCOMMAND")
    pin = drift_commands.add_parser("pin", help="Freeze a key's current reference (its last 24 h) for future windows.")
    _add_settings_flags(
        pin, [*_READER, ("--kafka", "kafka.bootstrap", str), ("--drift-topic", "kafka.drift_topic", str)]
    )
    pin.add_argument("--service", required=True, help="service.name of the key.")
    pin.add_argument("--model", required=True, help="Response model of the key.")
    pin.add_argument("--prompt-name", default="", help="Prompt name of the key.")
    pin.add_argument("--prompt-version", default="", help="Prompt version of the key.")

    from llmops.grafana_cli import add_cli as add_grafana_cli

    add_grafana_cli(commands)

    sql = commands.add_parser("sql", help="Run one read-only SQL query against the store.")
    _add_settings_flags(sql, _READER)
    sql.add_argument(
        "query",
        help="One SELECT, SHOW, DESCRIBE TABLE, EXISTS or EXPLAIN statement on the llmops database; "
        "a trailing FORMAT clause beats --format.",
    )
    sql.add_argument(
        "--format", default="PrettyCompactMonoBlock", help="ClickHouse output format (default PrettyCompactMonoBlock)."
    )
    return parser


def _settings(args: argparse.Namespace) -> tuple[Settings, dict[str, Any]]:
    overrides = {k[len("set:") :]: v for k, v in vars(args).items() if k.startswith("set:")}
    return load_settings(overrides, args.config), overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings, overrides = _settings(args)
    except Exception as exc:  # configuration errors are the user's to fix: say what, exit 2
        print(f"llmops: invalid configuration: {_config_problem(exc)}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        return _run(args, settings, overrides)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line, code = _user_error(exc, args, settings)
        if line is None:
            raise  # a bug: the traceback is what helps
        if settings.log_level == "DEBUG":
            logging.getLogger("llmops").debug("user error", exc_info=exc)
        sub = getattr(args, f"{args.command}_command", None)
        print(f"llmops {args.command}{' ' + sub if sub else ''}: {line}", file=sys.stderr)
        return code


def _config_problem(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


def _user_error(exc: Exception, args: argparse.Namespace, settings: Settings) -> tuple[str | None, int]:
    """The one line and exit code for an error the user can fix, or (None, 0) for anything else."""
    from llmops.errors import UserError, file_problem

    if isinstance(exc, UserError):
        return str(exc), exc.exit_code
    from processors.core.budgets import BudgetError
    from processors.core.pricing import PricingError

    if isinstance(exc, PricingError):
        return file_problem(exc, settings.processor.pricing_file or "pricing catalog"), 2
    if isinstance(exc, BudgetError):
        return file_problem(exc, getattr(args, "budgets", None) or settings.processor.budgets_file or "budgets file"), 2
    return None, 0


def _run(args: argparse.Namespace, settings: Settings, overrides: dict[str, Any]) -> int:
    if args.command == "up":
        from llmops.stack import run_stack

        return run_stack(
            settings,
            overrides,
            config_file=args.config,
            demo=args.demo,
            demo_rate=args.demo_rate,
            live_interval=args.live_interval,
        )
    if args.command == "receive":
        from collector.service import run_receiver

        return run_receiver(settings.receiver, settings.kafka, _require_kafka(settings))
    if args.command == "worker":
        from processors.worker import run_worker

        run_worker(settings, _require_kafka(settings))
        return 0
    if args.command == "migrate":
        if args.print_ddl:
            from sinks.clickhouse.ddl import script

            print(script(args.cluster, retention=args.retention), end="")
            return 0
        if args.cluster is not None or args.retention:
            from llmops.errors import UsageError

            raise UsageError(
                "--cluster and --retention only print DDL: add --print, then apply it with clickhouse-client"
            )
        from sinks.clickhouse.client import connect
        from sinks.clickhouse.migrations import apply_migrations

        client = connect(settings.clickhouse_dsn, settings.clickhouse.database, create_database=True)
        applied = apply_migrations(client, settings.clickhouse.database)
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "loadgen":
        from llmops.loadgen_cli import run_loadgen_command

        return run_loadgen_command(args)
    if args.command == "report":
        from llmops.report import build_report, render_report
        from llmops.store import open_reader

        report = build_report(open_reader(settings))
        print(json.dumps(report, indent=2, default=str) if args.json else render_report(report))
        return 0
    if args.command == "pricing":
        from llmops.preflight import check_pricing_file
        from llmops.pricing_cli import run_pricing

        check_pricing_file(settings)  # a broken pricing file: one line `file:line: problem`, exit 2
        return run_pricing(settings, args)
    if args.command == "budgets":
        from llmops.pricing_cli import budgets_report
        from llmops.stack_state import running_stack

        stack = running_stack(settings.data_dir)
        if args.budgets is None and stack is not None and stack.budgets_file:
            args.budgets = Path(stack.budgets_file)  # the file the running stack enforces
        print(budgets_report(settings, args.budgets, args.json))
        return 0
    if args.command == "config":
        if args.config_command == "docs":
            from llmops.config_docs import render_reference

            sys.stdout.write(render_reference())
        else:
            print(settings.model_dump_json(indent=2))
        return 0
    if args.command == "drift":
        from llmops.drift_cli import drift_pin

        print(drift_pin(settings, overrides, args.service, args.model, args.prompt_name, args.prompt_version))
        return 0
    if args.command == "grafana":
        from llmops.grafana_sync import run_command

        return run_command(args)
    if args.command == "sql":
        from llmops.sql_cli import run_sql

        sys.stdout.write(run_sql(settings, args.query, args.format))  # errors: one line from main()
        return 0
    return 2


def _require_kafka(settings: Settings) -> str:
    if not settings.kafka.bootstrap:
        from llmops.errors import UsageError

        raise UsageError("--kafka (or LLMOPS_KAFKA__BOOTSTRAP) is required here; `llmops up` starts an embedded broker")
    return settings.kafka.bootstrap


if __name__ == "__main__":
    sys.exit(main())
