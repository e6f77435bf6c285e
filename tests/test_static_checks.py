"""ruff and mypy over the tree, configured in pyproject.toml: any finding fails the suite.

Both run as `python -m` of the interpreter running pytest (they are test dependencies). mypy
keeps its incremental cache in .mypy_cache: 3 s warm, up to 2 min cold on 2 busy cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"


def test_the_tree_is_formatted() -> None:
    result = _run("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, f"ruff format --check (run `ruff format .`):\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing() -> None:
    result = _run("mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
