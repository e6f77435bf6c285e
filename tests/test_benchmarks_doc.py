"""BENCHMARKS.md and benchmarks/results/ agree: every kept run is cited, every citation exists.

Why: raw runs pile up (168 files once, most cited nowhere) and a figure whose raw file is gone
cannot be checked. BENCHMARKS.md cites results by file name or by a glob pattern (`*`, `[1-6]`)
in backticks, with or without the `benchmarks/results/` prefix.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "benchmarks" / "results"

# A backticked name of a results file: the extensions the benchmark scripts and hand-run A/Bs write.
CITATION = re.compile(r"`(?:benchmarks/results/)?([A-Za-z0-9_.\-*\[\]]+\.(?:json|txt))`")


def cited_patterns(text: str) -> set[str]:
    return set(CITATION.findall(text))


def result_files() -> list[str]:
    return sorted(p.name for p in RESULTS.iterdir() if p.is_file())


def test_every_results_file_is_cited() -> None:
    patterns = cited_patterns(DOC.read_text(encoding="utf-8"))
    uncited = [name for name in result_files() if not any(fnmatchcase(name, p) for p in patterns)]
    assert not uncited, f"benchmarks/results/ files BENCHMARKS.md does not cite (cite them or git rm them): {uncited}"


def test_every_citation_exists() -> None:
    files = result_files()
    patterns = cited_patterns(DOC.read_text(encoding="utf-8"))
    assert patterns, "BENCHMARKS.md cites no results file: the citation pattern no longer matches the document"
    missing = sorted(p for p in patterns if not any(fnmatchcase(name, p) for name in files))
    assert not missing, f"BENCHMARKS.md cites results that benchmarks/results/ does not hold: {missing}"


def test_citation_pattern_reads_names_and_globs() -> None:
    text = "raw: `benchmarks/results/overload-lag-off-1.json`, `pipeline-final-[1-6].json`, `x.py`, `a-*.txt`"
    assert cited_patterns(text) == {"overload-lag-off-1.json", "pipeline-final-[1-6].json", "a-*.txt"}
