"""`llmops grafana sync` arguments, kept apart from the sync so other commands start without grafana-client."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["DEFAULT_ROOT", "add_cli"]

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "dashboards"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """`llmops grafana sync [--url] [--token] [--root] [--dry-run]`."""
    grafana = subparsers.add_parser("grafana", help="Work with a running Grafana.")
    commands = grafana.add_subparsers(dest="grafana_command", required=True, metavar="COMMAND")
    sync_parser = commands.add_parser(
        "sync", help="Push datasource, dashboards, alert rules, contact points and policy (idempotent)."
    )
    sync_parser.add_argument(
        "--url", default=None, help="Grafana base URL [env GRAFANA_URL; default http://127.0.0.1:3000]."
    )
    sync_parser.add_argument(
        "--token", default=None, help="Service account token with the Admin role [env GRAFANA_TOKEN]."
    )
    sync_parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help=f"Provisioning tree [default {DEFAULT_ROOT}]."
    )
    sync_parser.add_argument("--dry-run", action="store_true", help="Only show what would change.")
    sync_parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".llmops"),
        help="With CLICKHOUSE_HOST unset, the data source points at the SQL endpoint of the `llmops up` "
        "running on this data dir [default .llmops].",
    )
