"""The dependency rule (ARCHITECTURE.md, "Layers"): application > adapters > core, adapters independent,
the core free of network and database libraries, no cycles between sibling packages.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter reads every import statement,
lazy ones inside functions included. The tests run `lint-imports` on this tree, check that every module
is assigned to a layer, and run it on copies with one bad import added, so the check is shown to fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llmops", "collector", "processors", "sinks")
_LINT = (
    "import sys; from importlinter.cli import lint_imports_command; "
    "sys.argv[0] = 'lint-imports'; sys.exit(lint_imports_command())"
)


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `tree`, with the contracts of `tree`/pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _layer_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layers for name in layer.replace("|", ":").split(":")]


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "KEPT" in result.stdout


def test_every_module_is_in_one_layer() -> None:
    """A new module outside every layer would escape the rule: each must sit in (or under) exactly one layer."""
    layers = _layer_modules()
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    unplaced = {}
    for module in modules:
        owners = [layer for layer in layers if module == layer or module.startswith(layer + ".")]
        if len(owners) != 1 and module not in PACKAGES:  # a top-level package's __init__ holds no code
            unplaced[module] = owners
    assert unplaced == {}, "assign each module to one layer in pyproject.toml [tool.importlinter]"


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


BAD_IMPORTS = {
    # A lazy import inside a function: the core reaching up into the application.
    "core imports the application": (
        "processors/core/sketch.py",
        "def _bad() -> None:\n    from llmops.config import Settings  # noqa: F401\n",
        "layers",
    ),
    # One adapter importing another.
    "adapter imports an adapter": (
        "collector/lag.py",
        "from sinks.clickhouse.errors import SinkError  # noqa: F401\n",
        "layers",
    ),
    # An adapter importing the application (what collector.service did with llmops.config).
    "adapter imports the application": (
        "sinks/clickhouse/writer.py",
        "from llmops.config import Settings  # noqa: F401\n",
        "layers",
    ),
    # The core doing network I/O.
    "core opens a socket": ("processors/core/records.py", "import socket  # noqa: F401\n", "core-pure"),
    # Two sibling modules importing each other.
    "a cycle in the core": (
        "processors/core/records.py",
        "def _bad() -> None:\n    from processors.core import rows  # noqa: F401\n",
        "no-cycles",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_one_bad_import_breaks_a_contract(tmp_path: Path, case: str) -> None:
    relative, bad, contract = BAD_IMPORTS[case]
    tree = _copy_tree(tmp_path)
    with open(tree / relative, "a") as module:
        module.write("\n\n" + bad)
    result = _lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = {c["id"]: c["name"] for c in config["contracts"]}
    assert f"{names[contract]} BROKEN" in result.stdout, result.stdout
    assert "1 broken" in result.stdout, result.stdout
