"""`llmops loadgen`: flags to LoadgenOptions, a progress bar, and the summary of what was sent."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from urllib.parse import urlsplit

from tqdm import tqdm

from llmops.config import load_settings
from llmops.errors import UserError
from llmops.loadgen import LoadgenOptions, render_summary, run_loadgen

__all__ = ["run_loadgen_command"]

DRIFT_WINDOWS = 4
AGENT_EXPORT_BATCH = 32  # small OTLP requests: a run's spans arrive in several of them, as from a busy app


def run_loadgen_command(args: argparse.Namespace) -> int:
    endpoint = args.endpoint or ("127.0.0.1:4317" if args.protocol == "grpc" else "http://127.0.0.1:4318")
    fields = {"endpoint": endpoint, "protocol": args.protocol, "seed": args.seed, "scenario": args.scenario}
    if args.rate is not None or args.duration is not None:
        fields.update(rate=args.rate, duration_s=args.duration)
    else:
        fields["count"] = args.count
        if args.scenario == "drift":
            # Spread the calls over DRIFT_WINDOWS drift windows of event time, ending just before
            # now, so the drift stage closes them and compares the switched key right after the run.
            count = args.count or 6000
            window_s = load_settings({}, args.config).drift.window_s
            fields.update(count=count, time_step_ns=DRIFT_WINDOWS * window_s * 10**9 // count)
    if args.scenario == "agents":
        fields.update(max_export_batch_size=AGENT_EXPORT_BATCH, loop_repeats=args.loop_repeats)
    elif args.loop_repeats is not None:
        print("llmops loadgen: --loop-repeats goes with --scenario agents", file=sys.stderr)
        return 2
    try:
        options = LoadgenOptions(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as exc:
        print(f"llmops loadgen: {exc}", file=sys.stderr)
        return 2
    _check_listening(options.endpoint, args.protocol)
    if logging.getLogger().level > logging.DEBUG:
        # The exporter logs every retry of every batch; the summary already counts what failed.
        logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    bar = (
        None
        if args.quiet
        else tqdm(
            total=options.total_calls,
            unit="run" if args.scenario == "agents" else "call",
            desc="loadgen",
            file=sys.stderr,
        )
    )

    def progress(sent: int, total: int) -> None:
        if bar is not None:
            bar.update(sent - bar.n)

    summary = run_loadgen(options, progress)
    if bar is not None:
        bar.update(summary.calls_sent - bar.n)
        bar.close()
    print(json.dumps(summary.to_dict(), indent=2, default=str) if args.json else render_summary(summary))
    return 0 if summary.complete else 1


def _check_listening(endpoint: str, protocol: str) -> None:
    """Refuse at once, in one line, when nothing listens where the spans would go
    (the exporter would retry for minutes)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (4317 if protocol == "grpc" else 4318)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        flag = "--otlp-grpc-port" if protocol == "grpc" else "--otlp-http-port"
        raise UserError(
            f"nothing accepts OTLP on {host}:{port} ({exc.strerror or exc}): "
            f"start `llmops up` (its {flag}) or pass --endpoint"
        ) from exc
