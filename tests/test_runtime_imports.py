"""The long-running components load no development tool: `llmops receive` and `llmops worker` import
what they run, never the load generator, the demo traffic, tests or benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_TOOLS = (
    "llmops.loadgen",
    "llmops.loadgen_agents",
    "llmops.loadgen_cli",
    "llmops.loadgen_sdk",
    "llmops.loadgen_truth",
    "llmops.demo",
    "tests",
    "benchmarks",
    "pytest",
    "hypothesis",
)


def _modules_after_import(*modules: str) -> set[str]:
    """Module names loaded by a fresh interpreter that imports `modules` (as `llmops receive`/`worker` do)."""
    code = f"import json, sys\nfor m in {list(modules)!r}: __import__(m)\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_components_import_no_dev_tool() -> None:
    loaded = _modules_after_import("llmops.cli", "collector.service", "processors.worker")
    assert "processors.app" in loaded and "collector.receiver" in loaded  # the components really were imported
    assert sorted(m for m in loaded if any(m == tool or m.startswith(tool + ".") for tool in DEV_TOOLS)) == []
