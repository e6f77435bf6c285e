"""Issue 17 §7: each command's --help lists only the options that command reads."""

from __future__ import annotations

import argparse
import re

import pytest

from llmops.cli import build_parser


def _options(*path: str) -> set[str]:
    parser: argparse.ArgumentParser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", parser.format_help())) - {"--help"}


@pytest.mark.parametrize(
    ("command", "absent"),
    [
        (
            ("receive",),
            {
                "--sql-port",
                "--pricing-file",
                "--budgets-file",
                "--batch-max-records",
                "--batch-max-wait",
                "--data-dir",
                "--clickhouse",
                "--partitions",
            },
        ),
        (("worker",), {"--otlp-grpc-port", "--otlp-http-port", "--max-request-bytes"}),
        (("migrate",), {"--kafka", "--sql-port", "--otlp-http-port"}),
        (("report",), {"--kafka", "--otlp-http-port", "--batch-max-records", "--pricing-file", "--partitions"}),
        (("sql",), {"--kafka", "--otlp-http-port", "--batch-max-records", "--pricing-file"}),
        (("budgets",), {"--kafka", "--otlp-http-port", "--batch-max-records", "--budgets-file"}),
        (("pricing", "unpriced"), {"--kafka", "--otlp-http-port", "--batch-max-records"}),
        (("drift", "pin"), {"--otlp-http-port", "--batch-max-records", "--pricing-file"}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_help_lists_only_what_the_command_reads(command: tuple[str, ...], absent: set[str]) -> None:
    options = _options(*command)
    assert options, "the command has options"
    assert not options & absent, sorted(options & absent)


def test_receive_lists_what_the_receiver_reads() -> None:
    assert _options("receive") == {
        "--log-level",
        "--kafka",
        "--topic",
        "--group-id",
        "--listen",
        "--otlp-grpc-port",
        "--otlp-http-port",
        "--max-request-bytes",
    }


def test_readers_list_the_data_dir_and_sql_port() -> None:
    for command in (("report",), ("sql",), ("budgets",), ("pricing", "unpriced")):
        assert {"--data-dir", "--sql-port", "--clickhouse", "--database"} <= _options(*command)
