"""Cache for the parts the tests build from source or fetch (the OpenTelemetry Collector, Apache Kafka's jars).

Both take minutes the first time on two cores, so each result lives outside the repository under
``${XDG_CACHE_HOME:-~/.cache}/llmops/<name>-<hash of its inputs>`` and is built once: a file lock makes a second
process (pytest-xdist, a parallel `make`) wait for the first instead of building again, and the result appears
under its final name only when complete (built in a scratch directory, then renamed).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["cache_root", "cached_build", "inputs_digest"]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmops"


def inputs_digest(files: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """A short hash of the files' contents (and of extra strings, such as a tool's version) naming one build."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for text in extra:
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()[:16]


def cached_build(name: str, build: Callable[[Path], None]) -> Path:
    """The directory ``cache_root()/name``, made by ``build(scratch_dir)`` if it is not there yet."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.is_dir():
        return final
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():  # another process built it while this one waited
            return final
        scratch = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=root))
        try:
            build(scratch)
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final
